"""Every X12 transaction set bridge maps, on one channel: dispatch by ST01.

A VAN mailbox or a vendor's SFTP drop often carries 855s, 856s and 810s in
the same interchange. This mapping hands each set to the per-set mapping
(:mod:`mappings.x12_837` ... :mod:`mappings.x12_832`, and partners' 999/997
to :mod:`mappings.x12_999`) and answers the
interchange once (TA1/999/997, see :mod:`mappings.x12_common`); ``sets``
narrows which sets the channel takes (the rest are ``mapping`` failures).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from mappings.base import MappingContext, Output
from mappings.x12_810 import Invoice810Mapping, Invoice810MappingConfig
from mappings.x12_832 import Catalog832Mapping
from mappings.x12_835 import Remittance835Mapping
from mappings.x12_837 import Claim837Mapping
from mappings.x12_850 import PurchaseOrder850Mapping
from mappings.x12_855 import PurchaseOrderAck855Mapping
from mappings.x12_856 import Shipment856Mapping
from mappings.x12_999 import FunctionalAck999Mapping
from mappings.x12_common import X12Mapping, X12MappingConfig
from parsers.base import Message
from parsers.x12.model import TransactionSet

__all__ = ["X12AnyMapping", "X12AnyMappingConfig"]

_ALL = ("837", "835", "850", "855", "856", "810", "832", "999", "997")


class X12AnyMappingConfig(X12MappingConfig):
    sets: list[str] = Field(default_factory=lambda: list(_ALL))
    #: 810 invoices need a known vendor (``vendor`` crosswalk for ISA06)
    require_vendor: bool = True


class X12AnyMapping(X12Mapping):
    """Claims, remittances and the purchase-to-pay sets, by ST01, on one channel."""

    Config = X12AnyMappingConfig
    config: X12AnyMappingConfig

    def __init__(self, config: X12AnyMappingConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        base = X12MappingConfig(acks=cfg.acks)
        table: dict[str, X12Mapping] = {
            "837": Claim837Mapping(base), "835": Remittance835Mapping(base), "850": PurchaseOrder850Mapping(base),
            "855": PurchaseOrderAck855Mapping(base), "856": Shipment856Mapping(base),
            "810": Invoice810Mapping(Invoice810MappingConfig(acks=cfg.acks, require_vendor=cfg.require_vendor)),
            "832": Catalog832Mapping(base), "999": FunctionalAck999Mapping(base),
            "997": FunctionalAck999Mapping(base),
        }
        self.by_set = {k: v for k, v in table.items() if k in cfg.sets}
        self.sets = tuple(self.by_set)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        return self.by_set[message.type].map_set(tset, message, ctx)
