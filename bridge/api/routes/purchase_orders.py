"""``/v1/purchase-orders``: create a PO that goes to its vendor as an X12 850 or a cXML OrderRequest, and follow
what comes back.

**Create** (``POST``, scope ``purchase-orders:write``, ``Idempotency-Key``
required, :mod:`bridge.api.idempotency`): the vendor, every line's item and
every cost center are checked against the crosswalks (kinds ``vendor``,
``item``, ``department``; an ERP code or a legacy source code is accepted,
stored as the ERP code; missing or inactive entries are a 422 naming each bad
field). The vendor must have a trading-partner profile (``partners:`` in
``bridge.yaml`` with ``vendor:`` set). Then, in ONE transaction: the
:class:`~mappings.canonical.PurchaseOrder` record (``write_records``: event
``purchase_order.order.recorded``), the 850 interchange rendered for the
profile with fresh control numbers (:func:`outbox.x12_outbound.emit_850`: event
``purchase_order.x12_850.created`` carrying ``filename``, ``content`` and the
profile's ``return_channel``; the relay delivers it through the destination
that subscribes to it, SFTP or folder), and the idempotency key. A PO number
the vendor already has is a 409. The request's correlation id is stamped on
the record and both events.

A profile with ``po_format: cxml`` gets a cXML 1.2 OrderRequest instead of the
850 (:func:`outbox.x12_outbound.emit_cxml_order`: event
``purchase_order.cxml_order_request.created`` with the document as
``filename`` + ``content``, routed only to the profile's ``cxml.destination``;
the Sender shared secret is read from the environment variable the profile
names, and a missing one is a 503 naming the variable, not a half-sent order).

**Status** (``GET /{id}``, scope ``records:read``) is derived at read time from
what is stored, never kept in a column, so a reprocessed or late document can
only add to it. Timeline steps, in rank order (the status is the highest
reached; ``rejected`` is final):

- ``created``: the PO record;
- ``sent``: the 850 (or cXML OrderRequest) event's delivery succeeded (``deliveries.delivered_at``);
- ``accepted`` / ``rejected``: a functional acknowledgment (997/999) of our
  interchange: an event ``edi.functional_ack.received`` whose ``data`` names
  ``partner`` and ``interchange_control`` (or ``po_number``) and an AK9/IK5
  ``status`` (A, E, P accepted; R rejected), as the inbound mapping
  ``x12_999`` (:mod:`mappings.x12_999`) emits it;
- ``acknowledged`` (or ``rejected`` when BAK02 is RJ/RD): an 855
  (``purchase_order_ack`` records of this vendor and PO), with the per-line
  status of the latest one (X12 668: IA accepted, IR rejected, IB backordered ...);
- ``shipped``: an 856 (``shipment`` records listing this PO number);
- ``invoiced``: an 810 (``invoice`` records for this PO number).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, WithJsonSchema
from sqlalchemy import Connection, select, text

from bridge.api.deps import DbDep, RecordsReader, SettingsDep, current_client
from bridge.api.idempotency import IdempotencyKey, create_once
from bridge.api.keys import Client
from bridge.api.paging import json_field
from bridge.api.problems import Problem, responses
from bridge.db import Database, like_escape
from bridge.db.tables import crosswalks, deliveries, events, records
from bridge.errors import ConfigError
from bridge.logging import current_correlation_id
from mappings.canonical import PurchaseOrder, PurchaseOrderLine
from outbox.writer import Origin, write_records
from outbox.x12_outbound import CXML_ORDER_EVENT, emit_850, emit_cxml_order
from parsers.x12.partners import PartnerConfig

__all__ = ["Code", "PurchaseOrderCreate", "PurchaseOrderPublic", "decimal_schema", "router", "validate_codes"]

router = APIRouter(prefix="/purchase-orders", tags=["purchase orders"])

PurchaseOrdersWriter = Annotated[Client, Security(current_client, scopes=["purchase-orders:write"])]

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._/-]+$")]
EVENT_850 = "purchase_order.x12_850.created"
FUNCTIONAL_ACK_EVENT = "edi.functional_ack.received"


def decimal_schema(*, places: int, le: str, ge: str | None = None, gt: str | None = None) -> WithJsonSchema:
    """The OpenAPI schema of a Decimal sent as a JSON number or a decimal string, bounds included
    (pydantic alone documents any string), so generated clients and schemathesis send valid ones."""
    number: dict[str, Any] = {"type": "number", "maximum": float(le)}
    if ge is not None:
        number["minimum"] = float(ge)
    if gt is not None:
        number["exclusiveMinimum"] = float(gt)
    sign = "-?" if ge is not None and Decimal(ge) < 0 else ""
    lead = r"(0|[1-9]\d{0,8})" if gt is None else r"([1-9]\d{0,8}|0(?=\.))"
    return WithJsonSchema({"anyOf": [number, {"type": "string", "pattern": rf"^{sign}{lead}(\.\d{{1,{places}}})?$"}]})


Quantity = Annotated[Decimal, Field(gt=0, le=Decimal("999999999"), decimal_places=4),
                     decimal_schema(places=4, le="999999999", gt="0")]
Price = Annotated[Decimal, Field(ge=0, le=Decimal("99999999"), decimal_places=4),
                  decimal_schema(places=4, le="99999999", ge="0")]

Status = Literal["created", "sent", "accepted", "rejected", "acknowledged", "shipped", "invoiced"]
_RANK = {"created": 0, "sent": 1, "accepted": 2, "acknowledged": 3, "shipped": 4, "invoiced": 5}


class PurchaseOrderLineCreate(BaseModel):
    model_config = {"extra": "forbid"}

    line_number: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9]+$")] | None = Field(
        None, description="PO101; defaults to the line's position (1, 2, ...)")
    item: Code = Field(description="ERP item number or source item code (item crosswalk)", examples=["ERP-SUT-0001"])
    vendor_part: Code | None = None
    description: str | None = Field(None, max_length=80)
    quantity: Quantity = Field(examples=["10"])
    unit: Annotated[str, Field(min_length=2, max_length=2, pattern=r"^[A-Z0-9]{2}$")] = Field(
        description="X12 unit of measure (355)", examples=["EA"])
    unit_price: Price | None = None
    cost_center: Code | None = Field(None, description="department or cost center (department crosswalk)")
    need_by: date | None = None


class PurchaseOrderCreate(BaseModel):
    """A purchase order to send to a vendor."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "po_number": "PO-2026-000123", "vendor": "V-MEDSUPPLY", "order_date": "2026-11-26",
        "cost_center": "CC-4100", "ship_to": "MAIN-DOCK",
        "lines": [{"item": "ERP-SUT-0001", "quantity": "10", "unit": "EA", "unit_price": "4.25",
                   "need_by": "2026-12-01"}]}]}}

    po_number: Annotated[str, Field(min_length=1, max_length=22, pattern=r"^[A-Za-z0-9-]+$")] = Field(
        description="the ERP's PO number (BEG03, at most 22 characters)")
    vendor: Code = Field(description="ERP vendor code or source vendor code (vendor crosswalk)")
    order_date: date | None = Field(None, description="BEG05; today (UTC) when absent")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    ship_to: Code | None = None
    bill_to: Code | None = None
    cost_center: Code | None = Field(None, description="header cost center (department crosswalk)")
    lines: list[PurchaseOrderLineCreate] = Field(min_length=1, max_length=999)


class TimelineEntryPublic(BaseModel):
    status: Status
    at: datetime
    source: str = Field(description="what showed it", examples=["event:0190f3b2-...", "record:42"])
    detail: dict[str, Any] = Field(default_factory=dict)


class LineStatusPublic(BaseModel):
    line_number: str
    status: str = Field(description="X12 668 from the latest 855 (IA, IR, IB, IC ...)", examples=["IA"])
    quantity: Decimal | None = None
    expected_date: date | None = None


class PurchaseOrderPublic(BaseModel):
    id: int = Field(description="the PO record's id")
    po_number: str
    vendor: str
    partner: str | None = Field(description="the trading-partner profile the 850 was rendered for")
    status: Status
    interchange_control: str | None = Field(None, description="ISA13 of the 850 sent")
    correlation_id: str | None = None
    order: dict[str, Any] = Field(description="the stored PurchaseOrder record")
    timeline: list[TimelineEntryPublic]
    lines: list[LineStatusPublic] = Field(default_factory=list, description="per-line status from the latest 855")


def _bad(errors: list[dict[str, str]]) -> Problem:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Problem(422, f"body field {first['name']!r}: {first['message']}{more}", slug="unknown-master-data",
                   title="Unknown master data", extra={"errors": errors})


def validate_codes(conn: Connection, wanted: list[tuple[str, str, str]]) -> tuple[dict[tuple[str, str], str],
                                                                                list[dict[str, str]]]:
    """Check ``(kind, code, field)`` triples against the crosswalks: ERP codes (targets) or source codes.

    Returns the ERP code for each (kind, code), and an error per unknown or inactive one.
    """
    found: dict[tuple[str, str], str] = {}
    errors: list[dict[str, str]] = []
    for kind in {k for k, _, _ in wanted}:
        codes = sorted({c for k, c, _ in wanted if k == kind})
        rows = conn.execute(select(crosswalks.c.source_code, crosswalks.c.target_code, crosswalks.c.active)
                            .where(crosswalks.c.kind == kind,
                                   crosswalks.c.target_code.in_(codes) | crosswalks.c.source_code.in_(codes))).all()
        for code in codes:
            active = [r for r in rows if r.active and code in (r.target_code, r.source_code)]
            as_target = [r for r in active if r.target_code == code]
            if as_target or active:
                found[(kind, code)] = code if as_target else active[0].target_code
    for kind, code, field in wanted:
        if (kind, code) not in found:
            errors.append({"location": "body", "name": field,
                           "message": f"{kind} {code!r} is not in the {kind} crosswalk, or is inactive"})
    return found, errors


def _partner_for(settings: Any, vendor: str) -> tuple[str, PartnerConfig]:
    partners: dict[str, PartnerConfig] = getattr(settings, "partners", {}) or {}
    for name, cfg in sorted(partners.items()):
        if cfg.vendor == vendor:
            return name, cfg
    raise Problem(422, f"vendor {vendor!r} has no trading-partner profile (partners: with vendor: {vendor!r} in "
                  "bridge.yaml), so there is no way to send it an 850", slug="no-trading-partner",
                  title="No trading partner", extra={"errors": [{"location": "body", "name": "vendor",
                                                                 "message": "no trading-partner profile"}]})


def _build(body: PurchaseOrderCreate, conn: Connection) -> PurchaseOrder:
    wanted = [("vendor", body.vendor, "vendor")]
    if body.cost_center:
        wanted.append(("department", body.cost_center, "cost_center"))
    for i, line in enumerate(body.lines):
        wanted.append(("item", line.item, f"lines.{i}.item"))
        if line.cost_center:
            wanted.append(("department", line.cost_center, f"lines.{i}.cost_center"))
    found, errors = validate_codes(conn, wanted)
    if errors:
        raise _bad(errors)
    numbers = [line.line_number or str(i + 1) for i, line in enumerate(body.lines)]
    if len(set(numbers)) != len(numbers):
        raise Problem(422, "body field 'lines': line numbers repeat", slug="invalid-parameter",
                      title="Invalid parameter",
                      extra={"errors": [{"location": "body", "name": "lines", "message": "line numbers repeat"}]})
    lines = [PurchaseOrderLine(
        line_number=n, item=found[("item", line.item)], vendor_part=line.vendor_part, description=line.description,
        quantity=line.quantity, unit=line.unit, unit_price=line.unit_price,
        cost_center=found[("department", line.cost_center)] if line.cost_center else None, need_by=line.need_by,
    ) for n, line in zip(numbers, body.lines, strict=True)]
    priced = [ln.quantity * ln.unit_price for ln in lines if ln.unit_price is not None]
    return PurchaseOrder(
        po_number=body.po_number, vendor=found[("vendor", body.vendor)],
        order_date=body.order_date or datetime.now(UTC).date(), status="open", currency=body.currency,
        ship_to=body.ship_to, bill_to=body.bill_to,
        cost_center=found[("department", body.cost_center)] if body.cost_center else None,
        total=sum(priced, Decimal(0)).quantize(Decimal("0.01")) if len(priced) == len(lines) else None, lines=lines, source_channel="api",
    )


@router.post("", status_code=201, response_model=PurchaseOrderPublic, summary="Create a purchase order",
             description="Validates vendor, items and cost centers against the crosswalks, stores the PO and "
                         "queues an X12 850 (or, for a vendor with `po_format: cxml`, a cXML OrderRequest) for the vendor's "
                         "trading partner, all in one transaction. "
                         "`Idempotency-Key` is required: a retry with the same key and body returns the first "
                         "response (header `Idempotent-Replayed: true`); the same key with another body is a "
                         "422. Needs `purchase-orders:write`.",
             responses=responses(401, 403, 409, 422, 429, 503))
def create_purchase_order(
    request: Request,
    body: PurchaseOrderCreate,
    idempotency_key: IdempotencyKey,
    client: PurchaseOrdersWriter,
    db: DbDep,
    settings: SettingsDep,
) -> JSONResponse:
    correlation_id = current_correlation_id()

    def create(conn: Connection) -> dict[str, Any]:
        po = _build(body, conn)
        partner_name, partner = _partner_for(settings, po.vendor)
        if conn.execute(select(records.c.id).where(records.c.type == PurchaseOrder.record_type,
                                                   records.c.natural_key == po.natural_key())).first():
            raise Problem(409, f"vendor {po.vendor!r} already has purchase order {po.po_number!r}; a change "
                          "is a new PO number (or a new Idempotency-Key is not a retry)",
                          slug="purchase-order-exists", title="Purchase order exists")
        write_records(db, conn, [(po, Origin(channel="api", correlation_id=correlation_id))])
        emit = emit_cxml_order if partner.po_format == "cxml" else emit_850
        try:
            emit(db, conn, po, partner_name, partner, correlation_id=correlation_id)
        except ConfigError as err:
            # the vendor's cXML shared secret is not in the environment: an operator's fix, not the client's
            raise Problem(503, f"purchase orders to vendor {po.vendor!r} cannot be sent: {err.key} is not "
                          "configured", slug="vendor-not-configured", title="Vendor not configured") from None
        content: dict[str, Any] = jsonable_encoder(_public(db, conn, po.natural_key()))
        return content

    # a concurrent request with the same key (or PO number) that commits first is answered as it was
    return create_once(db, client.id, idempotency_key, body, create, collection=request.url.path,
                       conflict=Problem(409, "a concurrent request created this purchase order first",
                                        slug="purchase-order-exists", title="Purchase order exists"))


def _events_of(conn: Connection, natural_key: str) -> list[Any]:
    return list(conn.execute(select(events.c.seq, events.c.id, events.c.event_type, events.c.payload,
                               events.c.created_at, events.c.correlation_id)
                        .where(events.c.aggregate_type == "purchase_order", events.c.aggregate_id == natural_key)
                        .order_by(events.c.seq)).all())


def _public(db: Database, conn: Connection, natural_key: str) -> PurchaseOrderPublic:
    row = conn.execute(select(records).where(records.c.type == PurchaseOrder.record_type,
                                             records.c.natural_key == natural_key)).one()
    po = orjson.loads(row.data)
    vendor, number = po["vendor"], po["po_number"]
    timeline: list[TimelineEntryPublic] = [TimelineEntryPublic(status="created", at=row.created_at,
                                                               source=f"record:{row.id}")]
    partner = interchange = None
    sent_seq: dict[int, str] = {}
    for e in _events_of(conn, natural_key):
        if e.event_type in (EVENT_850, CXML_ORDER_EVENT):
            data = orjson.loads(e.payload).get("data", {})
            partner, interchange = data.get("partner"), data.get("interchange_control")
            sent_seq[e.seq] = e.id
    if sent_seq:
        for d in conn.execute(select(deliveries).where(deliveries.c.event_seq.in_(list(sent_seq)),
                                                       deliveries.c.delivered_at.is_not(None))).all():
            timeline.append(TimelineEntryPublic(status="sent", at=d.delivered_at, source=f"event:{sent_seq[d.event_seq]}",
                                                detail={"destination": d.destination,
                                                        "interchange_control": interchange}))
    # 997/999: the contract in the module docstring
    for e in conn.execute(select(events.c.id, events.c.payload, events.c.created_at)
                          .where(events.c.event_type == FUNCTIONAL_ACK_EVENT).order_by(events.c.seq)).all():
        data = orjson.loads(e.payload).get("data", {})
        ours = (data.get("po_number") == number or
                (interchange is not None and data.get("interchange_control") == interchange
                 and data.get("partner") in (None, partner)))
        if ours:
            status = "rejected" if str(data.get("status", "")).upper() == "R" else "accepted"
            timeline.append(TimelineEntryPublic(status=status, at=e.created_at, source=f"event:{e.id}",
                                                detail={"ack": data.get("kind"), "code": data.get("status")}))
    lines: list[LineStatusPublic] = []
    for ack in conn.execute(select(records).where(records.c.type == "purchase_order_ack",
                                                  records.c.natural_key.like(
                                                      f"{like_escape(vendor)}:{like_escape(number)}:%", escape="\\"))
                            .order_by(records.c.updated_at, records.c.id)).all():
        a = orjson.loads(ack.data)
        rejected = str(a.get("ack_type", "")).upper() in ("RJ", "RD", "REJECT")
        timeline.append(TimelineEntryPublic(status="rejected" if rejected else "acknowledged", at=ack.updated_at,
                                            source=f"record:{ack.id}",
                                            detail={"ack_type": a.get("ack_type"), "ack_number": a.get("ack_number")}))
        lines = [LineStatusPublic(line_number=ln["line_number"], status=ln["status"], quantity=ln.get("quantity"),
                                  expected_date=ln.get("expected_date")) for ln in a.get("lines", [])]
    needle = orjson.dumps(number).decode()
    for ship in conn.execute(text("SELECT id, data, updated_at FROM records WHERE type = 'shipment' "
                                  "AND data LIKE :p ESCAPE '\\'"), {"p": f"%{like_escape(needle)}%"}).all():
        s = orjson.loads(ship.data)
        if s.get("vendor") == vendor and (number in s.get("po_numbers", []) or
                                          any(ln.get("po_number") == number for ln in s.get("lines", []))):
            timeline.append(TimelineEntryPublic(status="shipped", at=_utc(ship.updated_at), source=f"record:{ship.id}",
                                                detail={"shipment_id": s.get("shipment_id")}))
    for inv in conn.execute(text(f"SELECT id, data, updated_at FROM records WHERE type = 'invoice' "
                                 f"AND {json_field(db, 'po_number')} = :n"), {"n": number}).all():
        i = orjson.loads(inv.data)
        if i.get("vendor") == vendor:
            timeline.append(TimelineEntryPublic(status="invoiced", at=_utc(inv.updated_at), source=f"record:{inv.id}",
                                                detail={"invoice_number": i.get("invoice_number"),
                                                        "total": i.get("total")}))
    timeline.sort(key=lambda t: (t.at, _RANK.get(t.status, 9)))
    current: str = "created"
    for t in timeline:
        if current == "rejected":
            break
        if t.status == "rejected" or _RANK[t.status] > _RANK[current]:
            current = t.status
    return PurchaseOrderPublic(id=row.id, po_number=number, vendor=vendor, partner=partner,
                               status=current,  # type: ignore[arg-type]
                               interchange_control=interchange, correlation_id=row.correlation_id, order=po,
                               timeline=timeline, lines=lines)


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # raw text() reads of SQLite timestamps
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/{id}", response_model=PurchaseOrderPublic, summary="A purchase order and its status timeline",
            description="The PO as stored and its status derived from what came back: sent (850 delivered), "
                        "accepted/rejected (997/999), acknowledged with per-line status (855), shipped (856), "
                        "invoiced (810). Needs `records:read`.",
            responses=responses(401, 403, 404, 422, 429))
def get_purchase_order(
    id: Annotated[int, Path(ge=1, le=2**62, description="the PO record's id (from the create response)", examples=[42])],
    client: RecordsReader,
    db: DbDep,
) -> PurchaseOrderPublic:
    with db.read() as conn:
        key = conn.execute(select(records.c.natural_key).where(records.c.id == id,
                                                               records.c.type == PurchaseOrder.record_type)).scalar()
        if key is None:
            raise Problem(404, f"no purchase order with id {id}", slug="not-found", title="Not found")
        return _public(db, conn, key)
