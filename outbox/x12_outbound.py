"""X12 bridge sends: control-number sequences per partner, and a PurchaseOrder as an 850.

Control numbers (ISA13, GS06) come from the ``control_numbers`` table, one row
per (partner, kind), advanced with a single ``UPDATE ... RETURNING`` in the
caller's transaction (for acknowledgments, the commit transaction of the
interchange's records, through :class:`AckNumbering`): the row lock (PostgreSQL) or the single writer (SQLite)
makes the increment atomic across threads and processes, and a number whose
transaction rolled back was never sent, so no number is ever sent twice.
X12.5 allows ISA13 up to 999999999; the sequence refuses to wrap.

:func:`purchase_order_850` renders a PurchaseOrder for a partner profile as an
850 (BEG, CUR, REF, DTM, N1 buyer/vendor/ship-to, PO1 with BP/VP part numbers,
PID, CTT, AMT) in a complete interchange, and :func:`emit_850` writes it as an
outbox event (``purchase_order.x12_850.created``) in the caller's transaction,
routed to the partner's return channel only.
It round-trips through :class:`parsers.x12.X12Parser` and
:class:`mappings.x12_850.PurchaseOrder850Mapping` to the same PurchaseOrder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Connection, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge.db import Database
from bridge.db.tables import control_numbers
from bridge.errors import BridgeError
from mappings.base import EventDraft
from mappings.canonical import PurchaseOrder
from mappings.cxml_outbound import payload_id, render_order_request
from mappings.x12_common import file_safe
from outbox.destinations.folder import SECRET_SLOT
from outbox.writer import Origin, write_events
from parsers.x12.acks import render_ack
from parsers.x12.model import InterchangeReport
from parsers.x12.partners import PartnerConfig
from parsers.x12.writer import Envelope, GroupDraft, SetDraft, render_interchange

__all__ = ["CXML_ORDER_EVENT", "MAX_CONTROL", "AckNumbering", "allocate", "allocate_control_number", "emit_850",
           "emit_cxml_order", "purchase_order_850"]

MAX_CONTROL = 999_999_999
CXML_ORDER_EVENT = "purchase_order.cxml_order_request.created"
_PURPOSE = {"original": "00", "cancel": "01", "change": "04", "replace": "05", "confirmation": "06"}


def allocate(conn: Connection, partner: str, kind: str) -> int:
    """The next number of ``partner``'s ``kind`` sequence ("isa", "gs", "st"), in ``conn``'s transaction."""
    stmt = (update(control_numbers)
            .where(control_numbers.c.partner == partner, control_numbers.c.kind == kind)
            .values(value=control_numbers.c.value + 1)
            .returning(control_numbers.c.value))
    value = conn.execute(stmt).scalar_one_or_none()
    if value is None:
        ins = postgresql.insert(control_numbers) if conn.dialect.name == "postgresql" else sqlite.insert(control_numbers)
        # a new sequence starts at 0 and takes the same increment: one code path, no rowcount
        # reading (drivers disagree on it for ON CONFLICT DO NOTHING)
        conn.execute(ins.values(partner=partner, kind=kind, value=0).on_conflict_do_nothing())
        value = conn.execute(stmt).scalar_one()
    if value > MAX_CONTROL:
        raise BridgeError(f"control number sequence {kind!r} of partner {partner!r} is exhausted")
    return int(value)


def allocate_control_number(db: Database, partner: str, kind: str) -> int:
    """:func:`allocate` in a transaction of its own (operators' tools; the number is spent even if unused)."""
    with db.write() as conn:
        return allocate(conn, partner, kind)


class AckNumbering:
    """An ack draft's ``prepare``: number and render the ack in the commit transaction.

    The mapping knows which acknowledgment an interchange needs but not its
    numbers: they come from the partner's sequence in the same transaction as
    the records and the event, so a rolled-back batch spends no number and a
    committed ack always has its own. Re-running it (a retried transaction)
    renders afresh from the report.
    """

    __slots__ = ("kind", "now", "partner", "payload", "report")

    def __init__(self, report: InterchangeReport, kind: str, partner: str, payload: dict[str, Any],
                 now: datetime) -> None:
        self.report, self.kind, self.partner, self.payload, self.now = report, kind, partner, payload, now

    def __call__(self, conn: Connection) -> None:
        doc = render_ack(self.report, self.kind, next_control=lambda seq: allocate(conn, self.partner, seq),
                         now=self.now)
        self.payload.update(filename=f"{doc.kind}_{file_safe(self.partner)}_{doc.control:09d}.x12",
                            content=doc.content, status=doc.status, control=f"{doc.control:09d}")


def _amount(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return text


def purchase_order_850(po: PurchaseOrder, partner: PartnerConfig, *, isa_control: int, gs_control: int,
                       now: datetime | None = None) -> str:
    """The 850 interchange text for ``po`` (X12 850, version from the profile: 004010 or 005010)."""
    now = now or datetime.now(UTC)
    gs_version = "005010" if partner.version == "00501" else "004010"
    body: list[list[str]] = [
        ["BEG", _PURPOSE.get(po.purpose, "00"), "SA", po.po_number, "", po.order_date.strftime("%Y%m%d")],
        ["CUR", "BY", po.currency],
    ]
    if po.cost_center:
        body.append(["REF", "DP", po.cost_center])
    body.append(["N1", "BY", "BUYER", "92", po.bill_to or partner.our_isa_id])
    body.append(["N1", "SE", "VENDOR", "92", po.vendor])
    if po.ship_to:
        body.append(["N1", "ST", "SHIP TO", "92", po.ship_to])
    for line in po.lines:
        seg = ["PO1", line.line_number, _amount(line.quantity), line.unit, _amount(line.unit_price), "",
               "BP", line.item]
        if line.vendor_part:
            seg += ["VP", line.vendor_part]
        body.append(seg)
        if line.description:
            body.append(["PID", "F", "", "", "", line.description[:80]])
        if line.cost_center:
            body.append(["REF", "DP", line.cost_center])
        if line.need_by:
            body.append(["DTM", "002", line.need_by.strftime("%Y%m%d")])
    body.append(["CTT", str(len(po.lines))])
    if po.total is not None:
        body.append(["AMT", "TT", _amount(po.total)])
    env = Envelope(partner.our_isa_qualifier, partner.our_isa_id, partner.isa_qualifier, partner.isa_id,
                   isa_control, version=partner.version, ack_requested=partner.request_ta1, usage=partner.usage,
                   delimiters=partner.delimiters, line_break=partner.line_break)
    group = GroupDraft("PO", partner.our_gs, partner.their_gs, gs_control, gs_version,
                       [SetDraft("850", "0001", body)])
    return render_interchange(env, [group], now=now)


def emit_850(db: Database, conn: Connection, po: PurchaseOrder, partner_name: str, partner: PartnerConfig, *,
             correlation_id: str | None = None, now: datetime | None = None) -> EventDraft:
    """Allocate control numbers and write the 850 as an outbox event, all in ``conn``'s transaction."""
    isa = allocate(conn, partner_name, "isa")
    # GS06 = ISA13: the partner's 999/997 names only our group (AK102), and this way it
    # names the interchange too (``mappings.x12_999`` relies on it)
    content = purchase_order_850(po, partner, isa_control=isa, gs_control=isa, now=now)
    draft = EventDraft("purchase_order.x12_850.created", "purchase_order", po.natural_key(), {
        "filename": f"850_{file_safe(partner_name)}_{file_safe(po.po_number)}_{isa:09d}.x12",
        "content": content, "partner": partner_name, "kind": "850", "return_channel": partner.return_channel,
        "interchange_control": f"{isa:09d}", "po_number": po.po_number,
    }, route=partner.return_channel)
    write_events(db, conn, [(draft, Origin(correlation_id=correlation_id))])
    return draft


def emit_cxml_order(db: Database, conn: Connection, po: PurchaseOrder, partner_name: str, partner: PartnerConfig, *,
                    correlation_id: str | None = None, now: datetime | None = None) -> EventDraft:
    """For a vendor with ``po_format: cxml``: ``po`` as a cXML OrderRequest event, routed to its destination only.

    The document is rendered here with :data:`~outbox.destinations.folder.SECRET_SLOT`
    where the Sender shared secret goes: the stored event (the feed, the database,
    its backups) never holds the secret; the file destination fills it in from the
    environment variable the profile names when it writes the file. The variable
    is still checked here, so a PO for a vendor whose secret is missing is refused
    at once rather than left retrying.
    """
    if partner.cxml is None:
        raise BridgeError(f"partner {partner_name!r} has po_format cxml but no cxml block")
    payload = payload_id()
    profile = partner.cxml.profile().model_copy(update={"shared_secret": SecretStr(SECRET_SLOT)})
    content = render_order_request(po, profile, payload=payload, timestamp=now).decode()
    draft = EventDraft(CXML_ORDER_EVENT, "purchase_order", po.natural_key(), {
        "filename": f"OrderRequest_{file_safe(partner_name)}_{file_safe(po.po_number)}.xml",
        "content": content, "secret_env": partner.cxml.shared_secret_env, "partner": partner_name,
        "kind": "cxml_order_request", "payload_id": payload,
        "po_number": po.po_number,
    }, route=partner.cxml.destination)
    write_events(db, conn, [(draft, Origin(correlation_id=correlation_id))])
    return draft
