"""Canonical records: the shapes the cloud ERP sees, whatever format a record came in.

Each model names its ``record_type`` (the path segment in
``/v1/records/<type>``, with ``_`` as ``-``), its ``event_prefix`` (events are
``<prefix>.recorded`` on insert and ``<prefix>.updated`` on change) and its
natural key: the identity under which a replay or a reprocess upserts
instead of duplicating.

Money and quantities are ``Decimal`` (serialised as strings, never floats).
Timestamps are timezone-aware UTC. Fields named in ``phi_fields`` carry patient
identifiers and are masked for API clients without the ``phi:read`` scope.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "RECORD_TYPES",
    "CanonicalRecord",
    "Charge",
    "Claim",
    "ClaimLine",
    "Encounter",
    "Invoice",
    "InvoiceLine",
    "InventoryMovement",
    "Item",
    "MovementType",
    "PurchaseOrder",
    "PurchaseOrderAck",
    "PurchaseOrderAckLine",
    "PurchaseOrderLine",
    "Remittance",
    "RemittanceClaim",
    "Shipment",
    "ShipmentLine",
    "Vendor",
    "record_class",
]


class CanonicalRecord(BaseModel):
    """Base of every canonical record."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    record_type: ClassVar[str]
    event_prefix: ClassVar[str]
    aggregate_type: ClassVar[str]
    phi_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """A record built without validation, from values its caller has already typed and checked.

        For a mapping's hot path (DFT^P03 builds one Charge per FT1): about a
        quarter of what validation costs, and cheaper than ``model_construct``,
        which fills defaults and resolves aliases. Every field must be given,
        each with its field's type (aware UTC datetimes, ``Decimal``s, ``str``):
        the caller guarantees it; a missing or unknown field is a TypeError.
        """
        fields = cls.__pydantic_fields__
        if values.keys() != fields.keys():
            raise TypeError(f"{cls.__name__}.trusted needs exactly its fields: "
                            f"missing {sorted(fields.keys() - values.keys())}, "
                            f"unknown {sorted(values.keys() - fields.keys())}")
        record = cls.__new__(cls)
        # what model_construct sets, without its per-field loop
        object.__setattr__(record, "__dict__", values)
        object.__setattr__(record, "__pydantic_fields_set__", set(values))
        object.__setattr__(record, "__pydantic_extra__", None)
        object.__setattr__(record, "__pydantic_private__", None)
        return record

    def natural_key(self) -> str:
        raise NotImplementedError

    def aggregate_id(self) -> str:
        """The ordering key of this record's events (default: its natural key)."""
        return self.natural_key()


class MovementType(StrEnum):
    ISSUE = "issue"
    RETURN = "return"
    WASTE = "waste"
    RECEIPT = "receipt"
    ADJUSTMENT = "adjustment"
    TRANSFER = "transfer"


class InventoryMovement(CanonicalRecord):
    """A stock movement at a location: a cabinet issue, return or waste, a receipt."""

    record_type: ClassVar[str] = "inventory_movement"
    event_prefix: ClassVar[str] = "inventory.movement"
    aggregate_type: ClassVar[str] = "inventory_movement"
    phi_fields: ClassVar[frozenset[str]] = frozenset({"encounter"})

    movement_id: str
    movement_type: MovementType
    occurred_at: AwareDatetime
    item: str = Field(description="ERP item number (through the item crosswalk)")
    source_item: str = Field(description="the item code as the source system sent it")
    quantity: Decimal = Field(ge=0)
    #: signed effect on stock: negative for issue and waste, positive for return and receipt
    quantity_delta: Decimal
    unit: str
    department: str
    cost_center: str
    location: str | None = None
    lot: str | None = None
    serial: str | None = None
    encounter: str | None = None
    source_channel: str

    def natural_key(self) -> str:
        return self.movement_id

    def aggregate_id(self) -> str:
        return f"{self.item}@{self.location or self.cost_center}"


class Item(CanonicalRecord):
    """An item master entry (a supply, implant or drug item the ERP buys and stocks)."""

    record_type: ClassVar[str] = "item"
    event_prefix: ClassVar[str] = "item.master"
    aggregate_type: ClassVar[str] = "item"

    item_code: str
    erp_item: str | None = None
    description: str
    unit: str
    status: str = "active"
    category: str | None = None
    manufacturer: str | None = None
    manufacturer_part: str | None = None
    vendor: str | None = None
    vendor_part: str | None = None
    gtin: str | None = None
    unit_price: Decimal | None = None
    currency: str = "USD"
    charge_code: str | None = None
    source_channel: str

    def natural_key(self) -> str:
        return self.item_code


class Vendor(CanonicalRecord):
    record_type: ClassVar[str] = "vendor"
    event_prefix: ClassVar[str] = "vendor.master"
    aggregate_type: ClassVar[str] = "vendor"

    vendor_code: str
    erp_vendor: str | None = None
    name: str
    status: str = "active"
    duns: str | None = None
    tax_id: str | None = None
    address: dict[str, str] = Field(default_factory=dict)

    def natural_key(self) -> str:
        return self.vendor_code


class Charge(CanonicalRecord):
    """One FT1 of a DFT^P03 (HL7 v2.5.1 chapter 6), or a charge posted through the API."""

    record_type: ClassVar[str] = "charge"
    event_prefix: ClassVar[str] = "billing.charge"
    aggregate_type: ClassVar[str] = "account"
    phi_fields: ClassVar[frozenset[str]] = frozenset({"mrn", "account_number", "visit_number"})

    transaction_id: str
    sender: str
    transaction_type: str = Field(description="HL7 table 0017: CG charge, CD credit, PY payment, AJ adjustment")
    transaction_date: AwareDatetime | None = None
    posting_date: AwareDatetime | date | None = None
    charge_code: str
    charge_description: str | None = None
    quantity: Decimal
    amount: Decimal | None = None
    unit_amount: Decimal | None = None
    department: str | None = None
    cost_center: str | None = None
    performing_provider: str | None = None
    ordering_provider: str | None = None
    account_number: str | None = None
    visit_number: str | None = None
    mrn: str | None = None
    item: str | None = None
    source_item: str | None = None
    control_id: str | None = None
    source_channel: str

    def natural_key(self) -> str:
        return f"{self.sender}:{self.transaction_id}"

    def aggregate_id(self) -> str:
        return self.visit_number or self.account_number or self.natural_key()


class Encounter(CanonicalRecord):
    """A visit as the ERP needs it (no clinical detail): ADT A01/A03/A04/A08/A11/A13."""

    record_type: ClassVar[str] = "encounter"
    event_prefix: ClassVar[str] = "patient.encounter"
    aggregate_type: ClassVar[str] = "encounter"
    phi_fields: ClassVar[frozenset[str]] = frozenset({"mrn", "visit_number"})

    visit_number: str
    sender: str
    status: str
    patient_class: str | None = None
    location: str | None = None
    department: str | None = None
    cost_center: str | None = None
    admitted_at: AwareDatetime | None = None
    discharged_at: AwareDatetime | None = None
    mrn: str | None = None
    last_event: str | None = None
    source_channel: str

    def natural_key(self) -> str:
        return f"{self.sender}:{self.visit_number}"


class PurchaseOrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_number: str
    item: str
    vendor_part: str | None = None
    description: str | None = None
    quantity: Decimal
    unit: str
    unit_price: Decimal | None = None
    cost_center: str | None = None
    need_by: date | None = None


class PurchaseOrder(CanonicalRecord):
    record_type: ClassVar[str] = "purchase_order"
    event_prefix: ClassVar[str] = "purchase_order.order"
    aggregate_type: ClassVar[str] = "purchase_order"

    po_number: str
    vendor: str
    order_date: date
    status: str = "open"
    purpose: str = "original"
    currency: str = "USD"
    ship_to: str | None = None
    bill_to: str | None = None
    cost_center: str | None = None
    total: Decimal | None = None
    lines: list[PurchaseOrderLine]
    source_channel: str | None = None

    def natural_key(self) -> str:
        return f"{self.vendor}:{self.po_number}"


class PurchaseOrderAckLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_number: str
    status: str = Field(description="X12 668: IA accepted, IR rejected, IB backordered, IC changed ...")
    quantity: Decimal | None = None
    unit: str | None = None
    unit_price: Decimal | None = None
    expected_date: date | None = None
    item: str | None = None


class PurchaseOrderAck(CanonicalRecord):
    record_type: ClassVar[str] = "purchase_order_ack"
    event_prefix: ClassVar[str] = "purchase_order.ack"
    aggregate_type: ClassVar[str] = "purchase_order"

    po_number: str
    vendor: str
    ack_number: str
    ack_type: str = Field(description="X12 587 / cXML: AC, AD, AE, RJ, accept, reject ...")
    ack_date: date | None = None
    lines: list[PurchaseOrderAckLine] = Field(default_factory=list)
    source_channel: str | None = None

    def natural_key(self) -> str:
        return f"{self.vendor}:{self.po_number}:{self.ack_number}"

    def aggregate_id(self) -> str:
        return f"{self.vendor}:{self.po_number}"


class ShipmentLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    po_number: str | None = None
    line_number: str | None = None
    item: str | None = None
    vendor_part: str | None = None
    quantity: Decimal
    unit: str | None = None
    lot: str | None = None
    serial: str | None = None
    expires: date | None = None
    package: str | None = None


class Shipment(CanonicalRecord):
    record_type: ClassVar[str] = "shipment"
    event_prefix: ClassVar[str] = "supply.shipment"
    aggregate_type: ClassVar[str] = "shipment"

    shipment_id: str
    vendor: str
    shipped_at: AwareDatetime | date | None = None
    expected_at: AwareDatetime | date | None = None
    carrier: str | None = None
    tracking: str | None = None
    po_numbers: list[str] = Field(default_factory=list)
    lines: list[ShipmentLine] = Field(default_factory=list)
    source_channel: str | None = None

    def natural_key(self) -> str:
        return f"{self.vendor}:{self.shipment_id}"


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_number: str
    item: str | None = None
    vendor_part: str | None = None
    description: str | None = None
    quantity: Decimal
    unit: str | None = None
    unit_price: Decimal
    amount: Decimal | None = None
    po_line: str | None = None


class Invoice(CanonicalRecord):
    record_type: ClassVar[str] = "invoice"
    event_prefix: ClassVar[str] = "ap.invoice"
    aggregate_type: ClassVar[str] = "invoice"

    invoice_number: str
    vendor: str
    invoice_date: date
    po_number: str | None = None
    currency: str = "USD"
    total: Decimal
    tax: Decimal | None = None
    allowances: Decimal | None = None
    charges: Decimal | None = None
    lines: list[InvoiceLine] = Field(default_factory=list)
    source_channel: str | None = None

    def natural_key(self) -> str:
        return f"{self.vendor}:{self.invoice_number}"


class ClaimLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_number: int
    procedure: str
    modifiers: list[str] = Field(default_factory=list)
    revenue_code: str | None = None
    charge: Decimal
    units: Decimal | None = None
    service_date: date | None = None


class Claim(CanonicalRecord):
    """An 837P/837I claim (X12 5010 005010X222A1 / X223A2), with its billed service lines."""

    record_type: ClassVar[str] = "claim"
    event_prefix: ClassVar[str] = "revenue.claim"
    aggregate_type: ClassVar[str] = "claim"
    phi_fields: ClassVar[frozenset[str]] = frozenset({"patient_control_number", "member_id"})

    claim_id: str = Field(description="CLM01, the patient control number the payer echoes in CLP01")
    claim_type: str = Field(description="professional or institutional")
    submitter: str
    receiver: str | None = None
    billing_provider: str | None = None
    payer: str | None = None
    total_charge: Decimal
    facility_code: str | None = None
    patient_control_number: str | None = None
    member_id: str | None = None
    service_date: date | None = None
    lines: list[ClaimLine] = Field(default_factory=list)
    control_number: str | None = None
    source_channel: str | None = None

    def natural_key(self) -> str:
        return f"{self.submitter}:{self.claim_id}"


class RemittanceClaim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claim_id: str
    status: str
    charge: Decimal
    paid: Decimal
    patient_responsibility: Decimal | None = None
    payer_claim_number: str | None = None
    adjustments: list[dict[str, str]] = Field(default_factory=list)
    services: list[dict[str, object]] = Field(default_factory=list)


class Remittance(CanonicalRecord):
    """An 835 payment/advice (X12 5010 005010X221A1)."""

    record_type: ClassVar[str] = "remittance"
    event_prefix: ClassVar[str] = "revenue.remittance"
    aggregate_type: ClassVar[str] = "remittance"

    trace_number: str = Field(description="TRN02, the check or EFT trace number")
    payer: str
    payee: str | None = None
    payment_amount: Decimal
    payment_method: str | None = None
    payment_date: date | None = None
    claims: list[RemittanceClaim] = Field(default_factory=list)
    control_number: str | None = None
    source_channel: str | None = None

    def natural_key(self) -> str:
        return f"{self.payer}:{self.trace_number}"


RECORD_TYPES: dict[str, type[CanonicalRecord]] = {
    cls.record_type: cls
    for cls in (
        InventoryMovement,
        Item,
        Vendor,
        Charge,
        Encounter,
        PurchaseOrder,
        PurchaseOrderAck,
        Shipment,
        Invoice,
        Claim,
        Remittance,
    )
}


def record_class(record_type: str) -> type[CanonicalRecord] | None:
    """The model for a record type, accepting the URL form (``inventory-movements``)."""
    name = record_type.replace("-", "_")
    if name in RECORD_TYPES:
        return RECORD_TYPES[name]
    if name.endswith("s") and name[:-1] in RECORD_TYPES:
        return RECORD_TYPES[name[:-1]]
    return None
