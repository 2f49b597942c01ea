"""Point-of-use cabinet consumption exports (CSV or fixed-width) -> InventoryMovement.

One row is one movement: when, which item, how many of which unit, for which
department, optionally lot/serial and the patient encounter, and the
transaction type (issue, return, waste; codes configurable). The item goes
through the ``item`` crosswalk and the department through ``department``
(-> cost center); a missing or inactive entry quarantines the row as
``master_data``.

Identity: a ``transaction_id`` column, when the export has one, is the
movement's natural key (per channel). Without one, the key is a digest of the
row's content plus its ordinal among identical rows of the file, so a re-drop
or reprocess of the same rows upserts instead of duplicating. Ordinals are
counted over a window of the last ``ORDINAL_WINDOW`` distinct rows (bounded
memory): identical rows further apart than that count as one movement.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from pydantic import Field

from bridge.errors import MappingError
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import InventoryMovement, MovementType
from mappings.convert import to_datetime, to_decimal
from parsers.base import Column, Message

__all__ = ["InventoryMovementMapping", "InventoryMovementMappingConfig"]

_DEFAULT_TYPES = {
    "issue": "issue", "i": "issue", "iss": "issue", "dispense": "issue", "disp": "issue", "use": "issue",
    "return": "return", "r": "return", "ret": "return", "rtn": "return",
    "waste": "waste", "w": "waste", "wst": "waste", "wasted": "waste",
    "receipt": "receipt", "rcv": "receipt", "restock": "receipt", "refill": "receipt",
    "adjustment": "adjustment", "adj": "adjustment",
}
#: distinct rows whose count of identical copies is remembered per file (bounded memory)
ORDINAL_WINDOW = 65_536
_SIGN = {"issue": -1, "waste": -1, "return": 1, "receipt": 1, "adjustment": 1, "transfer": -1}


class InventoryMovementMappingConfig(MappingConfig):
    timestamp_formats: list[str] = Field(default_factory=lambda: [
        "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M",
        "%Y%m%d%H%M%S", "%Y%m%d%H%M",
    ])
    #: the cabinet's local time zone; naive timestamps are read in it
    timezone: str = "UTC"
    #: extra transaction-type codes -> issue | return | waste | receipt | adjustment | transfer
    transaction_types: dict[str, MovementType] = Field(default_factory=dict)
    #: default location when the export has no location column
    location: str | None = None
    #: adjustments may be negative; issues, returns and waste never are
    allow_negative_adjustments: bool = True


class InventoryMovementMapping(Mapping):
    """Cabinet consumption rows (issue / return / waste) to InventoryMovement records."""

    Config = InventoryMovementMappingConfig
    config: InventoryMovementMappingConfig
    columns: ClassVar[list[Column] | None] = [
        Column("timestamp", aliases=("date_time", "datetime", "transaction_time", "txn_time", "date", "time_stamp")),
        Column("item", aliases=("item_id", "item_number", "item_no", "itemno", "item_code", "sku")),
        Column("quantity", aliases=("qty", "quantity_used")),
        Column("unit", aliases=("uom", "unit_of_measure", "units")),
        Column("department", aliases=("dept", "dept_id", "department_id", "department_code")),
        Column("transaction_type", aliases=("type", "txn_type", "trans_type", "transaction")),
        Column("lot", required=False, aliases=("lot_number", "lot_no", "batch")),
        Column("serial", required=False, aliases=("serial_number", "serial_no", "sn")),
        Column("lot_serial", required=False, aliases=("lot/serial", "lot_or_serial")),
        Column("encounter", required=False, aliases=("encounter_id", "visit", "visit_number", "patient_encounter",
                                                     "account")),
        Column("transaction_id", required=False, aliases=("txn_id", "trans_id", "id", "transaction_number")),
        Column("location", required=False, aliases=("cabinet", "station", "device")),
    ]

    def __init__(self, config: InventoryMovementMappingConfig | None = None) -> None:
        super().__init__(config)
        self._types = {**_DEFAULT_TYPES, **{k.lower(): str(v) for k, v in self.config.transaction_types.items()}}

    def skipped(self, message: Message, ctx: MappingContext) -> None:
        # keep the ordinals of identical rows the same whether or not earlier rows are re-run
        if message.error is None:
            try:
                self.map(message, ctx, key_only=True)
            except Exception:  # noqa: BLE001 - a row that cannot map has no key to count
                pass

    def map(self, message: Message, ctx: MappingContext, *, key_only: bool = False) -> Sequence[Output]:
        d = message.data
        pos = message.position
        cfg = self.config
        occurred = to_datetime(d["timestamp"], formats=cfg.timestamp_formats, tz=cfg.timezone, field="timestamp",
                               position=pos)
        raw_type = d["transaction_type"].strip().lower()
        mtype = self._types.get(raw_type)
        if mtype is None:
            raise MappingError("transaction_type is not one of the configured codes "
                               f"({', '.join(sorted(set(self._types)))})", pos.with_(field="transaction_type"))
        qty = to_decimal(d["quantity"], field="quantity", position=pos)
        if qty < 0 and not (mtype == "adjustment" and cfg.allow_negative_adjustments):
            raise MappingError(f"quantity is negative on a {mtype}; the transaction type carries the direction",
                               pos.with_(field="quantity"))
        if qty == 0 and mtype != "adjustment":
            raise MappingError(f"quantity is zero on a {mtype}", pos.with_(field="quantity"))
        unit = d["unit"].strip().upper()
        if not unit:
            raise MappingError("unit is empty", pos.with_(field="unit"))
        source_item = d["item"].strip()
        if not source_item:
            raise MappingError("item is empty", pos.with_(field="item"))
        dept = d["department"].strip()
        if not dept:
            raise MappingError("department is empty", pos.with_(field="department"))
        lot = d.get("lot") or None
        serial = d.get("serial") or None
        if d.get("lot_serial") and not (lot or serial):
            lot = d["lot_serial"]
        location = d.get("location") or cfg.location
        delta = qty if mtype == "adjustment" else qty * _SIGN[mtype]
        movement_id = d.get("transaction_id") or ""
        if movement_id:
            movement_id = f"{ctx.channel}:{movement_id}"
        else:
            movement_id = self._content_key(ctx, occurred, source_item, qty, unit, dept, mtype, lot, serial,
                                            d.get("encounter") or "", location or "")
        if key_only:
            return []
        item = ctx.crosswalks.lookup("item", source_item, position=pos, field="item")
        cost_center = ctx.crosswalks.lookup("department", dept, position=pos, field="department")
        return [InventoryMovement(
            movement_id=movement_id, movement_type=MovementType(mtype), occurred_at=occurred, item=item,
            source_item=source_item, quantity=abs(qty) if mtype != "adjustment" else qty,
            quantity_delta=delta, unit=unit, department=dept, cost_center=cost_center, location=location,
            lot=lot, serial=serial, encounter=d.get("encounter") or None, source_channel=ctx.channel,
        )]

    def _content_key(self, ctx: MappingContext, occurred: datetime, item: str, qty: Decimal, unit: str, dept: str,
                     mtype: str, lot: str | None, serial: str | None, encounter: str, location: str) -> str:
        iso = occurred.isoformat()
        basis = "\x1f".join((ctx.channel, iso, item, str(qty.normalize()), unit, dept, mtype,
                             lot or "", serial or "", encounter, location))
        digest = hashlib.sha256(basis.encode()).hexdigest()[:24]
        # identical rows in one file are distinct movements (two boxes taken in the same
        # second); ctx.extra is per file, so concurrent files never share the count.
        # The count remembers the last ORDINAL_WINDOW distinct rows only (least recently seen
        # forgotten first), so memory stays bounded on a file of any size: identical rows share
        # their timestamp, so in an export they sit close together. The order is the file's,
        # so a reprocess numbers every row exactly as the first run did.
        ordinals: OrderedDict[str, int] = ctx.extra.setdefault("ordinals", OrderedDict())
        n = ordinals.pop(digest, 0) + 1
        ordinals[digest] = n
        if len(ordinals) > ORDINAL_WINDOW:
            ordinals.popitem(last=False)
        # the time prefix keeps the unique index's inserts local (exports are time-ordered)
        if occurred.year >= 1000:
            # the same text as f"{occurred:%Y%m%d%H%M%S}" (the key format is fixed), cut from the
            # ISO form instead of a second strftime
            stamp = iso[0:4] + iso[5:7] + iso[8:10] + iso[11:13] + iso[14:16] + iso[17:19]
        else:
            stamp = f"{occurred:%Y%m%d%H%M%S}"
        return f"{ctx.channel}:{stamp}:{digest}:{n}"
