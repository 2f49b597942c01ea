"""Item-master exports (CSV or fixed-width) -> Item.

One row per item: the source item number, description, unit of measure and,
when present, status, category, manufacturer and part, vendor and vendor
part, GTIN, price and the charge code. The ERP item comes from the ``item``
crosswalk when an entry exists; an item master is how new items become
known, so a missing entry is not an error here (``require_crosswalk: true``
makes it one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from bridge.errors import MappingError
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import Item
from mappings.convert import to_decimal
from parsers.base import Column, Message

__all__ = ["ItemMapping", "ItemMappingConfig"]

_STATUS = {"a": "active", "active": "active", "y": "active", "1": "active", "": "active",
           "i": "inactive", "inactive": "inactive", "n": "inactive", "0": "inactive",
           "d": "discontinued", "discontinued": "discontinued", "obsolete": "discontinued"}


class ItemMappingConfig(MappingConfig):
    require_crosswalk: bool = False
    currency: str = "USD"


class ItemMapping(Mapping):
    """Item-master rows to Item records."""

    Config = ItemMappingConfig
    config: ItemMappingConfig
    columns: ClassVar[list[Column] | None] = [
        Column("item", aliases=("item_id", "item_number", "item_no", "itemno", "item_code", "sku")),
        Column("description", aliases=("desc", "item_description", "name")),
        Column("unit", aliases=("uom", "unit_of_measure", "base_uom")),
        Column("status", required=False, aliases=("item_status", "active")),
        Column("category", required=False, aliases=("class", "item_class", "commodity")),
        Column("manufacturer", required=False, aliases=("mfr", "mfg", "manufacturer_name")),
        Column("manufacturer_part", required=False, aliases=("mfr_part", "mfr_part_number", "mfg_part", "mpn")),
        Column("vendor", required=False, aliases=("vendor_id", "vendor_code", "supplier")),
        Column("vendor_part", required=False, aliases=("vendor_part_number", "vendor_catalog", "catalog_number")),
        Column("gtin", required=False, aliases=("upc", "ndc", "barcode")),
        Column("unit_price", required=False, aliases=("price", "cost", "unit_cost")),
        Column("charge_code", required=False, aliases=("cdm", "chargemaster", "charge_number")),
    ]

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        d = message.data
        pos = message.position
        code = d["item"].strip()
        if not code:
            raise MappingError("item is empty", pos.with_(field="item"))
        desc = d["description"].strip()
        if not desc:
            raise MappingError("description is empty", pos.with_(field="description"))
        unit = d["unit"].strip().upper()
        if not unit:
            raise MappingError("unit is empty", pos.with_(field="unit"))
        status_raw = (d.get("status") or "").strip().lower()
        status = _STATUS.get(status_raw)
        if status is None:
            raise MappingError(f"status is not one of {', '.join(sorted(k for k in _STATUS if k))}",
                               pos.with_(field="status"))
        erp: str | None
        if self.config.require_crosswalk:
            erp = ctx.crosswalks.lookup("item", code, position=pos, field="item")
        else:
            erp = ctx.crosswalks.find("item", code)
        price_raw = (d.get("unit_price") or "").strip()
        price = to_decimal(price_raw, field="unit_price", position=pos) if price_raw else None
        if price is not None and price < 0:
            raise MappingError("unit_price is negative", pos.with_(field="unit_price"))
        return [Item(
            item_code=code, erp_item=erp, description=desc, unit=unit, status=status,
            category=d.get("category") or None, manufacturer=d.get("manufacturer") or None,
            manufacturer_part=d.get("manufacturer_part") or None, vendor=d.get("vendor") or None,
            vendor_part=d.get("vendor_part") or None, gtin=d.get("gtin") or None, unit_price=price,
            currency=self.config.currency, charge_code=d.get("charge_code") or None, source_channel=ctx.channel,
        )]
