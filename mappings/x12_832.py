"""X12 832 price/sales catalog -> Item, one per LIN loop (4010/5010).

BCT (catalog purpose) opens the set. Per LIN loop: the product id pairs from
LIN02 (VP vendor part, MG manufacturer part, UP/UK/EN GTIN, BP buyer part),
PID*F description, CTP unit price (CTP03; CTP05-1 the unit of measure, else
PO4 or ``EA``), G39/REF manufacturer name when sent.

Items are keyed by the ERP item (the ``item`` crosswalk entry for the vendor
part, or the BP buyer part) when there is one, else ``<vendor>:<vendor part>``:
a new catalog item is how an item becomes known, so an unknown code is
informative, not an error. The vendor is the ``vendor`` crosswalk entry for
ISA06, else ISA06 as sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.errors import MappingError
from mappings.base import MappingContext, Output
from mappings.canonical import Item
from mappings.x12_common import X12Mapping, el, money, pairs, vendor_of
from parsers.base import Message
from parsers.x12.model import TransactionSet
from parsers.x12.sets import loops

__all__ = ["Catalog832Mapping"]


class Catalog832Mapping(X12Mapping):
    """832 catalogs: items with vendor part, GTIN and price."""

    sets = ("832",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        vendor = vendor_of(tset, ctx, message.position, required=False)
        comp = tset.delimiters.component
        items: list[Output] = []
        for loop in loops(enumerate(tset.segments, start=1), "LIN", stop=("CTT", "SE")):
            p, lin = loop[0]
            pos = message.position.with_(segment="LIN", segment_index=p)
            ids = pairs(lin, 2)
            vp = ids.get("VP")
            if not vp and not ids.get("BP"):
                raise MappingError("LIN has no vendor (VP) or buyer (BP) part number", pos.with_(field="LIN02"))
            erp = ids.get("BP") or (ctx.crosswalks.find("item", vp) if vp else None)
            desc = price = unit = manufacturer = None
            for sp, seg in loop[1:]:
                if seg[0] == "PID" and not desc:
                    desc = el(seg, 5) or None
                elif seg[0] == "CTP" and price is None:
                    price = money(seg, 3, message.position.with_(segment="CTP", segment_index=sp), required=False)
                    unit = el(seg, 5).split(comp)[0] or unit
                elif seg[0] == "PO4" and not unit:
                    unit = el(seg, 3) or None
                elif seg[0] == "N1" and el(seg, 1) == "MF":
                    manufacturer = el(seg, 2) or None
            items.append(Item(
                item_code=erp or f"{vendor}:{vp}", erp_item=erp, description=desc or "(no description)",
                unit=(unit or "EA").upper(), status="active", manufacturer=manufacturer,
                manufacturer_part=ids.get("MG"), vendor=vendor, vendor_part=vp,
                gtin=ids.get("UP") or ids.get("UK") or ids.get("EN"), unit_price=price, source_channel=ctx.channel,
            ))
        if not items:
            raise MappingError("832 has no LIN items", message.position.with_(segment="LIN"))
        return items
