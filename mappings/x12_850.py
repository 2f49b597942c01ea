"""X12 850 purchase order -> PurchaseOrder (4010/5010).

BEG01 purpose (X12 353: 00 original, 01 cancel, 04 change, 05 replace, 06
confirmation), BEG03 PO number, BEG05 date; CUR02 currency; REF*DP the cost
center; N1*BY bill-to, N1*SE/VN vendor, N1*ST ship-to (N104 ids); per PO1 loop a
line: PO101 line number, PO102 quantity, PO103 unit, PO104 unit price, the
BP (buyer's part: the ERP item) and VP (vendor part) pairs from PO106, PID*F
description, REF*DP cost center, DTM*002 need-by; AMT*TT the total.

Crosswalks: the vendor is N1*SE/VN's N104 when qualified ``92`` (assigned by
the buyer, i.e. already the ERP code), else the ``vendor`` crosswalk entry for
it (or ISA08), passed through as sent when there is none (informative). The
item is BP; without BP, the ``item`` crosswalk entry for the vendor part; a
line with neither is a mapping failure.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.errors import MappingError
from mappings.base import MappingContext, Output
from mappings.canonical import PurchaseOrder, PurchaseOrderLine
from mappings.x12_common import X12Mapping, d8, el, money, pairs
from parsers.base import Message
from parsers.x12.model import TransactionSet
from parsers.x12.sets import loops

__all__ = ["PURPOSE", "PurchaseOrder850Mapping"]

PURPOSE = {"00": "original", "01": "cancel", "04": "change", "05": "replace", "06": "confirmation"}


class PurchaseOrder850Mapping(X12Mapping):
    """850 purchase orders."""

    sets = ("850",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        segs = list(enumerate(tset.segments, start=1))
        beg = tset.first("BEG")
        if beg is None:
            raise MappingError("850 has no BEG", message.position.with_(segment="BEG"))
        bpos = message.position.with_(segment="BEG", segment_index=beg[0])
        order_date = d8(el(beg[1], 5), bpos, "BEG05")
        if order_date is None:
            raise MappingError("BEG05 is empty", bpos.with_(field="BEG05"))
        currency = "USD"
        cost_center = vendor = ship_to = bill_to = total = None
        for _p, seg in segs:
            tag = seg[0]
            if tag == "PO1":
                break
            if tag == "CUR" and el(seg, 2):
                currency = el(seg, 2)
            elif tag == "REF" and el(seg, 1) == "DP":
                cost_center = el(seg, 2)
            elif tag == "N1":
                role, qual, code = el(seg, 1), el(seg, 3), el(seg, 4)
                if role in ("SE", "VN"):
                    vendor = code if qual == "92" else (ctx.crosswalks.find("vendor", code) or code)
                elif role == "ST":
                    ship_to = code or el(seg, 2)
                elif role == "BY":
                    bill_to = code or el(seg, 2)
        for p, seg in segs:
            if seg[0] == "AMT" and el(seg, 1) == "TT":
                total = money(seg, 2, message.position.with_(segment="AMT", segment_index=p))
        if vendor is None:
            receiver = tset.interchange.receiver
            vendor = ctx.crosswalks.find("vendor", receiver) or receiver
        lines = [self._line(loop, message, ctx) for loop in loops(segs, "PO1", stop=("CTT", "AMT", "SE"))]
        return [PurchaseOrder(
            po_number=el(beg[1], 3), vendor=vendor, order_date=order_date, purpose=PURPOSE.get(el(beg[1], 1), "original"),
            status="cancelled" if el(beg[1], 1) == "01" else "open", currency=currency, ship_to=ship_to,
            bill_to=bill_to, cost_center=cost_center, total=total, lines=lines, source_channel=ctx.channel,
        )]

    def _line(self, loop: list[tuple[int, list[str]]], message: Message, ctx: MappingContext) -> PurchaseOrderLine:
        p, po1 = loop[0]
        pos = message.position.with_(segment="PO1", segment_index=p)
        ids = pairs(po1, 6)
        item = ids.get("BP") or ids.get("IN")
        vendor_part = ids.get("VP")
        if not item and vendor_part:
            item = ctx.crosswalks.lookup("item", vendor_part, position=pos, field="PO107")
        if not item:
            raise MappingError("PO1 has no buyer (BP) or vendor (VP) part number", pos.with_(field="PO106"))
        desc = cost_center = need_by = None
        for sp, seg in loop[1:]:
            if seg[0] == "PID" and not desc:
                desc = el(seg, 5) or None
            elif seg[0] == "REF" and el(seg, 1) == "DP":
                cost_center = el(seg, 2)
            elif seg[0] == "DTM" and el(seg, 1) in ("002", "010"):
                need_by = d8(el(seg, 2), message.position.with_(segment="DTM", segment_index=sp), "DTM02")
        quantity = money(po1, 2, pos)
        assert quantity is not None
        return PurchaseOrderLine(
            line_number=el(po1, 1) or str(p), item=item, vendor_part=vendor_part, description=desc,
            quantity=quantity, unit=el(po1, 3) or "EA", unit_price=money(po1, 4, pos, required=False),
            cost_center=cost_center, need_by=need_by,
        )
