"""X12 856 ship notice/manifest -> Shipment (4010/5010), walking the HL hierarchy.

BSN02 the shipment id, BSN03/BSN04 date and time. HL levels (X12 735): S
shipment (TD5 carrier: TD503 SCAC or TD505 routing; REF*BM bill of lading /
REF*CN carrier reference as tracking; DTM*011 shipped, DTM*017 expected), O
order (PRF01 PO number), P pack (MAN*GM/MAN*UC SSCC-18 label), T tare, I item
(LIN pairs: BP buyer part, VP vendor part, LT lot, SN serial; SN1 quantity and
unit; REF*LT lot, REF*SE serial; DTM*036 expiry). An item line takes its PO
number from the O above it and its package from the P above it; an item
with several serials (one REF*SE or SN pair each) stays one line carrying
the first (the quantity says how many).

The vendor is the ``vendor`` crosswalk entry for ISA06, else ISA06 as sent
(informative: the ERP can receive against the PO number). Items: LIN BP as
sent, else the ``item`` crosswalk entry for VP when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from bridge.errors import MappingError, Position
from mappings.base import MappingContext, Output
from mappings.canonical import Shipment, ShipmentLine
from mappings.x12_common import X12Mapping, d8, el, money, pairs, vendor_of
from parsers.base import Message
from parsers.x12.model import TransactionSet
from parsers.x12.sets import HLNode, hl_tree

__all__ = ["Shipment856Mapping"]


def _when(d: str, t: str, pos: Position, date_ref: str, time_ref: str) -> datetime | date | None:
    """A CCYYMMDD date and an optional HHMM[SS[d..]] time (BSN03/04, DTM02/03): a datetime in UTC with a time,
    a date without; a bad date or time is a mapping error naming the element, never silently dropped."""
    day = d8(d, pos, date_ref)
    if day is None or not t:
        return day
    hh, mm = t[:2], t[2:4]
    if len(t) < 4 or not t.isdigit() or int(hh) > 23 or int(mm) > 59:
        raise MappingError(f"{time_ref} is not an HHMM time", pos.with_(field=time_ref))
    return datetime(day.year, day.month, day.day, int(hh), int(mm), tzinfo=UTC)


class Shipment856Mapping(X12Mapping):
    """856 advance ship notices with lots and serials."""

    sets = ("856",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        bsn = tset.first("BSN")
        if bsn is None:
            raise MappingError("856 has no BSN", message.position.with_(segment="BSN"))
        bpos = message.position.with_(segment="BSN", segment_index=bsn[0])
        roots = hl_tree(enumerate(tset.segments, start=1), stop=("CTT", "SE"))
        shipment = next((n for n in roots if n.level == "S"), None)
        if shipment is None:
            raise MappingError("856 has no shipment-level HL (HL03 = S)", message.position.with_(segment="HL"))
        carrier = tracking = None
        shipped: datetime | date | None = _when(el(bsn[1], 3), el(bsn[1], 4), bpos, "BSN03", "BSN04")
        expected: datetime | date | None = None
        for p, seg in shipment.segments:
            if seg[0] == "TD5":
                carrier = el(seg, 3) or el(seg, 5) or carrier
            elif seg[0] == "REF" and el(seg, 1) in ("BM", "CN") and not tracking:
                tracking = el(seg, 2)
            elif seg[0] == "DTM" and el(seg, 1) in ("011", "017"):
                dpos = message.position.with_(segment="DTM", segment_index=p)
                when = _when(el(seg, 2), el(seg, 3), dpos, "DTM02", "DTM03")
                if el(seg, 1) == "011":
                    shipped = when or shipped
                else:
                    expected = when
        lines: list[ShipmentLine] = []
        po_numbers: list[str] = []
        self._walk(shipment, None, None, lines, po_numbers, message, ctx)
        return [Shipment(
            shipment_id=el(bsn[1], 2), vendor=vendor_of(tset, ctx, bpos, required=False), shipped_at=shipped,
            expected_at=expected, carrier=carrier, tracking=tracking, po_numbers=po_numbers, lines=lines,
            source_channel=ctx.channel,
        )]

    def _walk(self, node: HLNode, po: str | None, package: str | None, lines: list[ShipmentLine],
              po_numbers: list[str], message: Message, ctx: MappingContext) -> None:
        if node.level == "O":
            prf = node.first("PRF")
            po = el(prf, 1) if prf else po
            if po and po not in po_numbers:
                po_numbers.append(po)
        elif node.level in ("P", "T"):
            man = node.first("MAN")
            package = el(man, 2) if man else package
        elif node.level == "I":
            lines.append(self._item(node, po, package, message, ctx))
        for child in node.children:
            self._walk(child, po, package, lines, po_numbers, message, ctx)

    def _item(self, node: HLNode, po: str | None, package: str | None, message: Message,
              ctx: MappingContext) -> ShipmentLine:
        lin = node.first("LIN")
        sn1 = node.first("SN1")
        pos = message.position.with_(segment="HL", segment_index=node.position)
        if sn1 is None:
            raise MappingError("item HL has no SN1 (quantity shipped)", pos.with_(segment="SN1"))
        ids = pairs(lin, 2) if lin else {}
        lot, serial, expires = ids.get("LT"), ids.get("SN"), None
        for p, seg in node.segments:
            if seg[0] == "REF" and el(seg, 1) == "LT" and not lot:
                lot = el(seg, 2)
            elif seg[0] == "REF" and el(seg, 1) in ("SE", "SN") and not serial:
                serial = el(seg, 2)
            elif seg[0] == "DTM" and el(seg, 1) == "036":
                expires = d8(el(seg, 2), message.position.with_(segment="DTM", segment_index=p), "DTM02")
        vp = ids.get("VP")
        item = ids.get("BP") or (ctx.crosswalks.find("item", vp) if vp else None)
        quantity = money(sn1, 2, message.position.with_(segment="SN1", segment_index=node.position))
        assert quantity is not None
        return ShipmentLine(po_number=po, line_number=el(lin, 1) or None if lin else None, item=item,
                            vendor_part=vp, quantity=quantity, unit=el(sn1, 3) or None, lot=lot, serial=serial,
                            expires=expires, package=package)
