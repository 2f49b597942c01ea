"""What every X12 mapping shares: acknowledgments, set dispatch and element helpers.

:class:`X12Mapping` answers the parser's ``"interchange"`` messages with the
TA1 and 999/997 of :mod:`parsers.x12.acks`, as outbox events
``edi.ack.<kind>.created`` (payload ``filename``, ``content``, ``partner``,
``kind``, ``status``, ``return_channel``, ``control``), routed to the
partner's return channel alone, so an acknowledgment is committed with the
interchange's records and delivered by the relay, never written ad hoc. Ack
control numbers come from the partner's ``control_numbers`` sequence
(``partner`` in the config; default ``<ISA05>:<ISA06>``), allocated when the
draft is written, in the commit transaction (the mapping never touches the
database).

Transaction sets go to :meth:`X12Mapping.map_set`; a set the mapping does not
map is a ``mapping`` failure naming ST01 (the 999 has already accepted it:
it is syntactically fine, just not this channel's business).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Literal

from pydantic import Field

from bridge.errors import MappingError, Position
from mappings.base import EventDraft, Mapping, MappingConfig, MappingContext, Output
from parsers.base import Message
from parsers.x12.acks import ack_kinds
from parsers.x12.model import InterchangeReport, TransactionSet

__all__ = ["X12AckConfig", "X12Mapping", "X12MappingConfig", "d8", "el", "file_safe", "money", "pairs", "qty",
           "vendor_of"]


class X12AckConfig(MappingConfig):
    #: TA1 back: when ISA14 asks or on rejection, always, only on errors, never
    ta1: Literal["requested", "always", "on_error", "never"] = "requested"
    #: 999 for 5010 groups, 997 for 4010 groups
    functional: bool = True
    #: the partner profile name (control-number sequence and routing); default ISA05:ISA06
    partner: str | None = None
    #: the destination that delivers acks to the partner
    return_channel: str | None = None


class X12MappingConfig(MappingConfig):
    acks: X12AckConfig = Field(default_factory=X12AckConfig)


def file_safe(text: str) -> str:
    """A partner id or PO number as part of a file name: letters, digits, ``.``, ``_``, ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"


def el(seg: list[str], i: int) -> str:
    """Element ``i`` (1-based, as in ``CLP04``) or ``""`` when absent."""
    return seg[i] if i < len(seg) else ""


def money(seg: list[str], i: int, pos: Position, *, required: bool = True, index: int | None = None) -> Decimal | None:
    """Element ``i`` as a Decimal (X12 R type). ``index`` (the segment position) only serves errors."""
    raw = seg[i] if i < len(seg) else ""
    if not raw:
        if required:
            raise MappingError(f"{seg[0]}{i:02d} is empty", _where(pos, seg[0], i, index))
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():  # NaN and Infinity are Decimals too, but not X12 numbers
        raise MappingError(f"{seg[0]}{i:02d} is not a number", _where(pos, seg[0], i, index))
    return value


def _where(pos: Position, seg_id: str, i: int, index: int | None) -> Position:
    ref = f"{seg_id}{i:02d}"
    return pos.with_(field=ref) if index is None else pos.with_(segment=seg_id, segment_index=index, field=ref)


qty = money


@lru_cache(maxsize=4096)
def _date(raw: str) -> date | None:
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def d8(raw: str, pos: Position, ref: str, *, index: int | None = None) -> date | None:
    """A CCYYMMDD date (X12 DTP/DTM D8), or the first date of an RD8 range.

    ``pos`` plus ``index`` (the segment's position) locate an error; the
    position is only built when there is one (it is the hot path of big 837s).
    """
    raw = raw.split("-")[0]
    if not raw:
        return None
    value = _date(raw)
    if value is None:
        where = pos.with_(field=ref) if index is None else pos.with_(segment=ref[:-2], segment_index=index, field=ref)
        raise MappingError(f"{ref} is not a CCYYMMDD date", where)
    return value


class X12Mapping(Mapping):
    """Base of the X12 mappings; subclasses set ``sets`` and implement :meth:`map_set`."""

    Config = X12MappingConfig
    config: X12MappingConfig
    #: the ST01 values this mapping maps
    sets: tuple[str, ...] = ()

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        if message.type == "interchange":
            if not isinstance(message.data, InterchangeReport):
                return []
            return self.acknowledge(message.data, ctx)
        if message.type not in self.sets or not isinstance(message.data, TransactionSet):
            raise MappingError(f"transaction set {message.type} is not mapped by {type(self).__name__} "
                               f"(it maps {', '.join(self.sets)})", message.position.with_(field="ST01"))
        return self.map_set(message.data, message, ctx)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        raise NotImplementedError

    def acknowledge(self, report: InterchangeReport, ctx: MappingContext) -> list[EventDraft]:
        """One draft per ack the interchange needs, routed to the partner's return channel only.

        The content is rendered when the draft is written (``prepare``): its control
        numbers come from the partner's sequence in the commit transaction, never here.
        """
        # outbox.x12_outbound imports this module (file_safe): import it when acknowledging
        from outbox.x12_outbound import AckNumbering

        cfg = self.config.acks
        ic = report.interchange
        partner = cfg.partner or f"{ic.sender_qualifier}:{ic.sender}"
        now = datetime.now(UTC)
        drafts: list[EventDraft] = []
        for kind in ack_kinds(report, ta1=cfg.ta1, functional=cfg.functional):
            payload: dict[str, object] = {"partner": partner, "kind": kind, "return_channel": cfg.return_channel,
                                          "acknowledges": ic.control}
            drafts.append(EventDraft(f"edi.ack.{kind.lower()}.created", "edi_interchange", f"{partner}:{ic.control}",
                                     payload, route=cfg.return_channel,
                                     prepare=AckNumbering(report, kind, partner, payload, now)))
        return drafts

    def answer_duplicate(self, message: Message, ctx: MappingContext) -> Sequence[EventDraft]:
        """A resent interchange (same ISA05:ISA06 and ISA13) gets a TA1 rejection, note code 025
        (duplicate interchange control number, X12.5 TA105), and nothing else."""
        if message.type != "interchange" or not isinstance(message.data, InterchangeReport):
            return []
        dup = replace(message.data, status="R", note="025",
                      reason=f"duplicate interchange control number {message.data.interchange.control}")
        return self.acknowledge(dup, ctx)


def pairs(seg: list[str], start: int) -> dict[str, str]:
    """Qualifier/id pairs (X12 235/234: ``BP`` buyer part, ``VP`` vendor part, ``LT`` lot, ``SN`` serial)."""
    out: dict[str, str] = {}
    for i in range(start, len(seg) - 1, 2):
        if seg[i] and seg[i + 1]:
            out.setdefault(seg[i], seg[i + 1])
    return out


def vendor_of(tset: TransactionSet, ctx: MappingContext, pos: Position, *, required: bool) -> str:
    """The ERP vendor of a set a vendor sent: the ``vendor`` crosswalk entry for ISA06.

    Not required: an unknown sender id passes through as sent (informative;
    the ERP matches it later). Required (invoices): a ``master_data`` failure.
    """
    code = tset.interchange.sender
    if required:
        return ctx.crosswalks.lookup("vendor", code, position=pos, field="ISA06")
    return ctx.crosswalks.find("vendor", code) or code
