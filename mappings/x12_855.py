"""X12 855 purchase order acknowledgment -> PurchaseOrderAck (4010/5010).

BAK02 the acknowledgment type (X12 587: AC accepted with detail and change,
AD accepted with detail no change, AE accepted with exception, AK accepted no
detail, RD rejected with detail, RJ rejected), BAK03 the PO number, BAK08 the
seller's order number (the ack number; else ISA13-ST02). Per PO1 loop, each
ACK segment is a line status (X12 668: IA item accepted, IR rejected, IB
backordered, IC changed, IQ quantity changed, IP price changed, IS
substituted ...) with ACK02 quantity, ACK03 unit and ACK05 the date
(ACK04 068 ship, 067 delivery). A PO1 without ACK takes BAK02's sense.

The vendor is the ``vendor`` crosswalk entry for ISA06, else ISA06 as sent
(informative). Items: PO1 BP as sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.errors import MappingError
from mappings.base import MappingContext, Output
from mappings.canonical import PurchaseOrderAck, PurchaseOrderAckLine
from mappings.x12_common import X12Mapping, d8, el, money, pairs, vendor_of
from parsers.base import Message
from parsers.x12.model import TransactionSet
from parsers.x12.sets import loops

__all__ = ["PurchaseOrderAck855Mapping"]

_DEFAULT_LINE = {"AC": "IA", "AD": "IA", "AE": "IA", "AK": "IA", "AT": "IA", "RD": "IR", "RJ": "IR", "RF": "IR"}


class PurchaseOrderAck855Mapping(X12Mapping):
    """855 acknowledgments with line statuses."""

    sets = ("855",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        bak = tset.first("BAK")
        if bak is None:
            raise MappingError("855 has no BAK", message.position.with_(segment="BAK"))
        bpos = message.position.with_(segment="BAK", segment_index=bak[0])
        ack_type = el(bak[1], 2)
        po_number = el(bak[1], 3)
        if not po_number:
            raise MappingError("BAK03 (PO number) is empty", bpos.with_(field="BAK03"))
        segs = list(enumerate(tset.segments, start=1))
        lines: list[PurchaseOrderAckLine] = []
        for loop in loops(segs, "PO1", stop=("CTT", "SE")):
            p, po1 = loop[0]
            pos = message.position.with_(segment="PO1", segment_index=p)
            ids = pairs(po1, 6)
            acks = [(sp, s) for sp, s in loop[1:] if s[0] == "ACK"]
            base = {"line_number": el(po1, 1) or str(p), "item": ids.get("BP") or ids.get("VP"),
                    "unit_price": money(po1, 4, pos, required=False)}
            if not acks:
                lines.append(PurchaseOrderAckLine(status=_DEFAULT_LINE.get(ack_type, "IA"),
                                                  quantity=money(po1, 2, pos, required=False),
                                                  unit=el(po1, 3) or None, **base))
            for sp, ack in acks:
                apos = message.position.with_(segment="ACK", segment_index=sp)
                lines.append(PurchaseOrderAckLine(status=el(ack, 1), quantity=money(ack, 2, apos, required=False),
                                                  unit=el(ack, 3) or None,
                                                  expected_date=d8(el(ack, 5), apos, "ACK05"), **base))
        return [PurchaseOrderAck(
            po_number=po_number, vendor=vendor_of(tset, ctx, bpos, required=False),
            ack_number=el(bak[1], 8) or f"{tset.interchange.control}-{tset.control}", ack_type=ack_type,
            ack_date=d8(el(bak[1], 9) or el(bak[1], 4), bpos, "BAK09"), lines=lines, source_channel=ctx.channel,
        )]
