"""MFN^M16 (materials item master, HL7 v2.6 chapter 8.4.7) and MFN^M01 -> Item and its status.

Each MFE group of the message is one :class:`~mappings.canonical.Item`:

- M16: item code MFE-4.1 (or ITM-1.1), description ITM-2 (or ITM-1.2),
  category ITM-5.1, manufacturer ITM-8 (or ITM-7.2) and catalog number
  ITM-9, charge code ITM-12.1 (or PCE-3.1), vendor VND-2.1 and vendor
  catalog number VND-4, unit PKG-2.1 of the default order package (PKG-3 = Y,
  else the first PKG) and its price PKG-5.1.1;
- M01 (master file not otherwise specified): item code MFE-4.1 and
  description MFE-4.2, and whatever ``m01_fields`` reads from the site's
  Z-segment after each MFE (``{"unit": "ZIM-3", "unit_price": "ZIM-4"}``).

Status (the record-level event code MFE-1, HL7 table 0180, wins over the
item status ITM-3, table 0776): MAD/MUP -> ITM-3 (A active, I inactive,
P pending; default active), MDC deactivate -> ``inactive``, MAC reactivate
-> ``active``, MDL delete -> ``discontinued``. A status change is an update
of the Item, so it reaches the ERP as ``item.master.updated``.

The ERP item comes from the ``item`` crosswalk when an entry exists; an item
master is how new items become known, so a missing entry is not an error
unless ``require_crosswalk`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, field_validator

from bridge.errors import MappingError
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import Item
from mappings.hl7_common import hl7_decimal, hl7_message, value_near
from parsers import hl7
from parsers.base import Message

__all__ = ["MfnMapping", "MfnMappingConfig"]

_EVENT_STATUS = {"MDC": "inactive", "MAC": "active", "MDL": "discontinued"}
_ITEM_STATUS = {"A": "active", "I": "inactive", "P": "pending", "": "active"}
_M01_KEYS = {"description", "unit", "unit_price", "category", "manufacturer", "manufacturer_part", "vendor",
             "vendor_part", "gtin", "charge_code", "status"}


class MfnMappingConfig(MappingConfig):
    #: unit of measure when the message carries none
    default_unit: str = "EA"
    currency: str = "USD"
    require_crosswalk: bool = False
    #: M01: Item field -> reference read after each MFE (a Z-segment, e.g. ``ZIM-3``)
    m01_fields: dict[str, str] = Field(default_factory=dict)
    message_types: list[str] = Field(default_factory=lambda: ["MFN^M16", "MFN^M01"])

    @field_validator("m01_fields")
    @classmethod
    def _refs(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - _M01_KEYS)
        if unknown:
            raise ValueError(f"unknown Item field(s) {', '.join(unknown)}")
        for ref in value.values():
            hl7.parse_ref(ref)
        return value


class MfnMapping(Mapping):
    """Item master files (MFN^M16, MFN^M01) to Item records and status changes."""

    Config = MfnMappingConfig
    config: MfnMappingConfig

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        cfg = self.config
        msg = hl7_message(message, tuple(cfg.message_types), "hl7_mfn")
        mfes = msg.segments("MFE")
        if not mfes:
            raise MappingError("MFN has no MFE segment", message.position.with_(segment="MFE"))
        event = msg.msh.value(9, 2)
        out: list[Output] = []
        for mfe in mfes:
            fields = self._m16(msg, mfe) if event == "M16" else self._m01(msg, mfe)
            code = fields.pop("item_code", "")
            if not code:
                raise MappingError("MFE-4 (primary key value: item code) is empty", mfe.position(4))
            record_event = mfe.value(1).upper()
            status = _EVENT_STATUS.get(record_event)
            raw_status = fields.pop("status", "") or ""
            if status is None:
                status = _ITEM_STATUS.get(raw_status.upper(), raw_status.lower() or "active")
            erp: str | None
            if cfg.require_crosswalk:
                erp = ctx.crosswalks.lookup("item", code, position=mfe.position(4), field="MFE-4")
            else:
                erp = ctx.crosswalks.find("item", code)
            price = fields.pop("unit_price", "")
            out.append(Item(
                item_code=code, erp_item=erp, description=fields.pop("description", "") or code,
                unit=(fields.pop("unit", "") or cfg.default_unit).upper(), status=status,
                unit_price=hl7_decimal(price or "", field="unit price", position=mfe.position()),
                currency=cfg.currency, source_channel=ctx.channel,
                **{k: (v or None) for k, v in fields.items()},
            ))
        return out

    def _m16(self, msg: hl7.Message, mfe: hl7.Segment) -> dict[str, str]:
        group = _group(msg, mfe)
        itm = group.get("ITM", [None])[0]
        vnd = group.get("VND", [None])[0]
        pkgs = group.get("PKG", [])
        pkg = next((p for p in pkgs if p.value(3).upper() == "Y"), pkgs[0] if pkgs else None)
        pce = group.get("PCE", [None])[0]
        g = (lambda seg, *a: seg.value(*a) if seg is not None else "")  # noqa: E731
        return {
            "item_code": mfe.value(4, 1) or g(itm, 1, 1),
            "description": g(itm, 2) or g(itm, 1, 2) or mfe.value(4, 2),
            "status": g(itm, 3, 1),
            "category": g(itm, 5, 1),
            "manufacturer": g(itm, 8) or g(itm, 7, 2),
            "manufacturer_part": g(itm, 9),
            "charge_code": g(itm, 12, 1) or g(pce, 3, 1),
            "vendor": g(vnd, 2, 1),
            "vendor_part": g(vnd, 4),
            "unit": g(pkg, 2, 1),
            "unit_price": g(pkg, 5, 1, 1),
        }

    def _m01(self, msg: hl7.Message, mfe: hl7.Segment) -> dict[str, str]:
        fields = {"item_code": mfe.value(4, 1), "description": mfe.value(4, 2)}
        for key, ref in self.config.m01_fields.items():
            fields[key] = value_near(msg, mfe, ref) or fields.get(key, "")
        return fields


def _group(msg: hl7.Message, mfe: hl7.Segment) -> dict[str, list[hl7.Segment]]:
    """The segments of one MFE group: those after it, up to the next MFE."""
    out: dict[str, list[hl7.Segment]] = {}
    for seg in msg.all_segments[mfe.index + 1 :]:
        if seg.id == "MFE":
            break
        out.setdefault(seg.id, []).append(seg)
    return out
