"""cXML 1.2 documents -> canonical procurement records.

One mapping for a cXML channel, dispatching on the document type the XML
parser found in the envelope (``parsers.xml.cxml_envelope``), because a
supplier network sends every kind of document down the same connection:

==========================  ==================  ===========================================
cXML document               canonical record    cXML 1.2 User's Guide chapter
==========================  ==================  ===========================================
``OrderRequest``            PurchaseOrder       "Purchase Orders" (OrderRequestHeader, ItemOut)
``ConfirmationRequest``     PurchaseOrderAck    "Order Confirmations" (ConfirmationHeader/Item)
``ShipNoticeRequest``       Shipment            "Ship Notices" (ShipNoticeHeader, ShipNoticePortion)
``InvoiceDetailRequest``    Invoice             "Invoices" (InvoiceDetailRequestHeader/Summary)
``ProductActivityMessage``  Item (one per       "Product Activity" (ProductActivityDetails);
                            detail)             only when listed in ``accept``
==========================  ==================  ===========================================

Who the vendor is: an OrderRequest travels from the buyer to the supplier, so
the vendor is the ``Header/To`` identity; the other documents travel from the
supplier, so it is ``Header/From``. The identity goes through the ``vendor``
crosswalk (``vendor_crosswalk: required`` by default). A line's ERP item is
its ``BuyerPartID`` when the sender gives one, else the ``item`` crosswalk entry
for its ``SupplierPartID``, else the ``SupplierPartID`` itself.

The mapping is namespace-agnostic: cXML has no namespace, but a document that
puts its elements in one (some gateways do) maps the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field

from bridge.errors import MappingError, Position
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import (
    Invoice,
    InvoiceLine,
    Item,
    PurchaseOrder,
    PurchaseOrderAck,
    PurchaseOrderAckLine,
    PurchaseOrderLine,
    Shipment,
    ShipmentLine,
)
from parsers.base import Message

__all__ = ["CONFIRMATION_STATUS", "HEADER_COST_CENTER", "CxmlMapping", "CxmlMappingConfig", "ORDER_PURPOSE"]

DocumentType = Literal["OrderRequest", "ConfirmationRequest", "ShipNoticeRequest", "InvoiceDetailRequest",
                       "ProductActivityMessage"]

#: OrderRequestHeader/@type -> PurchaseOrder.purpose (and back, for outbound)
ORDER_PURPOSE = {"new": "original", "update": "change", "delete": "cancel"}
#: the OrderRequestHeader Extrinsic carrying the order's header cost center
HEADER_COST_CENTER = "CostCenter"
#: ConfirmationStatus/@type -> X12 668 line status codes, as PurchaseOrderAckLine uses them
CONFIRMATION_STATUS = {"accept": "IA", "reject": "IR", "backordered": "IB", "detail": "IC", "allDetail": "IC",
                       "except": "IC", "unknown": "IC"}


_DEFAULT_ACCEPT: tuple[DocumentType, ...] = ("OrderRequest", "ConfirmationRequest", "ShipNoticeRequest",
                                              "InvoiceDetailRequest")


class CxmlMappingConfig(MappingConfig):
    #: document types this channel maps; anything else is a mapping failure naming the type
    accept: list[DocumentType] = Field(default_factory=lambda: list(_DEFAULT_ACCEPT))
    #: required: an unknown identity is a master-data failure; optional: fall back to the identity; off
    vendor_crosswalk: Literal["required", "optional", "off"] = "required"
    #: unit for a ProductActivityMessage detail that names none
    default_unit: str = "EA"


@lru_cache(maxsize=512)
def _q(ns: str, path: str) -> str:
    """``Header/From`` -> ``{ns}Header/{ns}From`` for the document's namespace (or none)."""
    if not ns:
        return path
    return "/".join(step if step in (".", "..", "") or step.startswith("@") else f"{ns}{step}"
                    for step in path.split("/"))


@lru_cache(maxsize=512)
def _steps(ns: str, path: str) -> tuple[str, ...]:
    return tuple(ns + step for step in path.split("/"))


def _descend(el: Any, tags: Sequence[str]) -> Any:
    """The first child with ``tags[0]``, its first child with ``tags[1]``, ...; None when one is missing."""
    for tag in tags:
        for child in el:
            if child.tag == tag:
                el = child
                break
        else:
            return None
    return el


class _Doc:
    """Namespace-aware lookups in one cXML element tree."""

    __slots__ = ("ns", "pos")

    def __init__(self, root: Any, pos: Position) -> None:
        tag = root.tag
        self.ns = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
        self.pos = pos

    # child-by-child scans: several times cheaper than ElementPath's find, and cheaper than
    # iterchildren(tag), whose per-call set-up costs more than comparing a parent's few children
    def find(self, el: Any, path: str) -> Any:
        return _descend(el, _steps(self.ns, path))

    def findall(self, el: Any, path: str) -> list[Any]:
        *head, last = _steps(self.ns, path)
        parent = _descend(el, head)
        return [] if parent is None else [child for child in parent if child.tag == last]

    def text(self, el: Any, path: str) -> str | None:
        found = self.find(el, path)
        if found is None or found.text is None:
            return None
        return found.text.strip() or None

    def need(self, el: Any, path: str, what: str) -> Any:
        found = self.find(el, path)
        if found is None:
            raise MappingError(f"{what}: element {path} is missing", self.at(el, path))
        return found

    def attr(self, el: Any, name: str, *, required: bool = False) -> str | None:
        value = el.get(name)
        value = value.strip() if value else None
        if required and not value:
            raise MappingError(f"<{_local(el)}> has no {name} attribute", self.at(el, "@" + name))
        return value

    def kids(self, el: Any | None) -> dict[str, Any]:
        """Direct children of ``el`` by local name (first occurrence wins); {} for None.

        A dict of a line's few children instead of a dozen ``find`` calls: lxml's
        per-call cost, not the tree size, is the hot path of a large order.
        """
        found: dict[str, Any] = {}
        if el is None:
            return found
        if not self.ns:
            # a non-str tag (comment, entity reference) is only a key nobody asks for
            for child in el:
                found.setdefault(child.tag, child)
            return found
        cut = len(self.ns)
        for child in el:
            tag = child.tag
            if isinstance(tag, str):
                found.setdefault(tag[cut:], child)
        return found

    def at(self, el: Any, field: str) -> Position:
        line = getattr(el, "sourceline", None)
        return self.pos.with_(line=line or self.pos.line, field=f"{_local(el)}/{field}")

    def decimal(self, el: Any, raw: str | None, field: str, *, required: bool = True) -> Decimal | None:
        if raw is None or not raw.strip():
            if required:
                raise MappingError(f"{field} is missing", self.at(el, field))
            return None
        try:
            value = Decimal(raw.strip().replace(",", ""))
        except InvalidOperation:
            raise MappingError(f"{field} is not a number", self.at(el, field)) from None
        if not value.is_finite():
            raise MappingError(f"{field} is not a finite number", self.at(el, field))
        return value

    def money(self, el: Any, path: str) -> tuple[Decimal | None, str | None]:
        m = self.find(el, path + "/Money" if path else "Money")
        if m is None:
            return None, None
        return self.decimal(m, m.text, "Money"), (m.get("currency") or None)

    def day(self, el: Any, raw: str | None, field: str, *, required: bool = False) -> date | None:
        """The calendar date of a cXML date or timestamp as the sender wrote it (ISO 8601)."""
        if not raw:
            if required:
                raise MappingError(f"{field} is missing", self.at(el, "@" + field))
            return None
        try:
            return date.fromisoformat(raw.strip()[:10])
        except ValueError:
            raise MappingError(f"{field} is not an ISO 8601 date", self.at(el, "@" + field)) from None

    def moment(self, el: Any, raw: str | None, field: str) -> datetime | date | None:
        """A cXML timestamp (ISO 8601 with offset) in UTC; a bare date stays a date."""
        if not raw:
            return None
        text = raw.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            value = datetime.fromisoformat(text)
        except ValueError:
            raise MappingError(f"{field} is not an ISO 8601 timestamp", self.at(el, "@" + field)) from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _el_text(el: Any | None) -> str | None:
    if el is None or el.text is None:
        return None
    return el.text.strip() or None


def _local(el: Any) -> str:
    tag = el.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


class CxmlMapping(Mapping):
    """cXML OrderRequest, ConfirmationRequest, ShipNoticeRequest, InvoiceDetailRequest (and
    ProductActivityMessage when accepted) to PurchaseOrder, PurchaseOrderAck, Shipment, Invoice (Item)."""

    Config = CxmlMappingConfig
    config: CxmlMappingConfig

    def __init__(self, config: CxmlMappingConfig | None = None) -> None:
        super().__init__(config)
        self._handlers: dict[str, Callable[[_Doc, Any, Any, MappingContext], Sequence[Output]]] = {
            "OrderRequest": self._order,
            "ConfirmationRequest": self._confirmation,
            "ShipNoticeRequest": self._ship_notice,
            "InvoiceDetailRequest": self._invoice,
            "ProductActivityMessage": self._product_activity,
        }

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        root = message.data
        if _local(root) != "cXML":
            raise MappingError(f"expected a <cXML> document, got <{_local(root)}>", message.position)
        if message.type not in self.config.accept:
            raise MappingError(f"cXML {message.type} is not accepted on this channel (mapping.accept: "
                               f"{', '.join(self.config.accept)})", message.position.with_(field=message.type))
        doc = _Doc(root, message.position)
        body = doc.find(root, f"Request/{message.type}")
        if body is None:
            body = doc.need(root, f"Message/{message.type}", message.type)
        return self._handlers[message.type](doc, root, body, ctx)

    # -- shared --------------------------------------------------------------

    def _vendor(self, doc: _Doc, root: Any, party: str, ctx: MappingContext) -> str:
        ident_el = doc.find(root, f"Header/{party}/Credential/Identity")
        ident = (ident_el.text or "").strip() if ident_el is not None else ""
        if not ident:
            raise MappingError(f"Header/{party} has no Credential/Identity", doc.pos.with_(
                field=f"Header/{party}/Credential/Identity"))
        mode = self.config.vendor_crosswalk
        if mode == "off":
            return ident
        erp = ctx.crosswalks.find("vendor", ident)
        if erp is not None or mode == "optional":
            return erp or ident
        # a missing or inactive entry: lookup raises the master-data error (its position is built only here)
        return ctx.crosswalks.lookup("vendor", ident, position=doc.at(ident_el, "Identity"),
                                     field=f"Header/{party}/Credential/Identity")

    def _item(self, doc: _Doc, el: Any, ctx: MappingContext) -> tuple[str | None, str | None]:
        """(ERP item, supplier part) of an element holding ``ItemID``."""
        supplier = doc.text(el, "ItemID/SupplierPartID")
        buyer = doc.text(el, "ItemID/BuyerPartID")
        if buyer:
            return buyer, supplier
        if supplier:
            return ctx.crosswalks.find("item", supplier) or supplier, supplier
        return None, None

    def _description(self, doc: _Doc, el: Any, path: str) -> str | None:
        return self._own_text(doc, doc.find(el, path))

    @staticmethod
    def _own_text(doc: _Doc, d: Any | None) -> str | None:
        """A Description's own text, whitespace collapsed; its ShortName child (cXML 1.2.011+)
        only when there is none."""
        if d is None:
            return None
        if not len(d):
            return (" ".join(d.text.split()) or None) if d.text else None
        own = " ".join(" ".join(t for t in (d.text, *(c.tail for c in d)) if t).split())
        return own or doc.text(d, "ShortName")

    # -- OrderRequest -> PurchaseOrder ------------------------------------------

    def _order(self, doc: _Doc, root: Any, body: Any, ctx: MappingContext) -> Sequence[Output]:
        head = doc.need(body, "OrderRequestHeader", "OrderRequest")
        po_number = doc.attr(head, "orderID", required=True)
        order_type = head.get("type") or "new"
        purpose = ORDER_PURPOSE.get(order_type)
        if purpose is None:
            raise MappingError(f"OrderRequestHeader type {order_type!r} is not new, update or delete",
                               doc.at(head, "@type"))
        total, currency = doc.money(head, "Total")
        lines = []
        for item_out in doc.findall(body, "ItemOut"):
            line, line_currency = self._order_line(doc, item_out, ctx)
            lines.append(line)
            currency = currency or line_currency
        if not lines:
            raise MappingError(f"OrderRequest {po_number} has no ItemOut lines", doc.at(body, "ItemOut"))
        ship_to = doc.find(head, "ShipTo/Address")
        bill_to = doc.find(head, "BillTo/Address")
        cost_center = next((_el_text(e) for e in doc.findall(head, "Extrinsic")
                            if e.get("name") == HEADER_COST_CENTER), None)
        return [PurchaseOrder(
            po_number=po_number, vendor=self._vendor(doc, root, "To", ctx),
            order_date=doc.day(head, head.get("orderDate"), "orderDate", required=True),
            status="cancelled" if order_type == "delete" else "open", purpose=purpose,
            currency=currency or "USD",
            ship_to=ship_to.get("addressID") if ship_to is not None else None,
            bill_to=bill_to.get("addressID") if bill_to is not None else None, cost_center=cost_center,
            total=total, lines=lines, source_channel=ctx.channel,
        )]

    def _order_line(self, doc: _Doc, item_out: Any, ctx: MappingContext) -> tuple[PurchaseOrderLine, str | None]:
        """One ``ItemOut`` (and the currency of its unit price).

        The hot path of a large order: each element is reached once through
        :meth:`_Doc.kids` (one pass over a parent's few children) rather than a
        path lookup per field, which would walk the same children again.
        """
        line_no = doc.attr(item_out, "lineNumber", required=True)
        kids = doc.kids(item_out)
        ids = doc.kids(kids.get("ItemID"))
        supplier = _el_text(ids.get("SupplierPartID"))
        item = _el_text(ids.get("BuyerPartID")) or (
            (ctx.crosswalks.find("item", supplier) or supplier) if supplier else None)
        if item is None:
            raise MappingError(f"ItemOut line {line_no} has no SupplierPartID or BuyerPartID",
                               doc.at(item_out, "ItemID"))
        detail = kids.get("ItemDetail")
        if detail is None:
            raise MappingError(f"ItemOut line {line_no}: element ItemDetail is missing",
                               doc.at(item_out, "ItemDetail"))
        dk = doc.kids(detail)
        unit = _el_text(dk.get("UnitOfMeasure"))
        if not unit:
            raise MappingError(f"ItemOut line {line_no} has no UnitOfMeasure", doc.at(detail, "UnitOfMeasure"))
        unit_price = dk.get("UnitPrice")
        money = unit_price[0] if unit_price is not None and len(unit_price) else None
        price = currency = None
        if money is not None:
            price, currency = doc.decimal(money, money.text, "Money"), money.get("currency")
        distribution = kids.get("Distribution")
        return PurchaseOrderLine(
            line_number=line_no, item=item, vendor_part=supplier, description=self._own_text(doc, dk.get("Description")),
            quantity=doc.decimal(item_out, item_out.get("quantity"), "quantity"), unit=unit.upper(),
            unit_price=price, cost_center=self._cost_center(doc, distribution) if distribution is not None else None,
            need_by=doc.day(item_out, item_out.get("requestedDeliveryDate"), "requestedDeliveryDate"),
        ), currency

    @staticmethod
    def _cost_center(doc: _Doc, distribution: Any) -> str | None:
        """The ``id`` of the Distribution's first AccountingSegment whose Name reads "Cost Center"."""
        name_tag = (doc.ns + "Name",)
        for seg in distribution.iter(doc.ns + "AccountingSegment"):
            name = (_el_text(_descend(seg, name_tag)) or "").lower().replace(" ", "")
            if "costcenter" in name or "costcentre" in name:
                return seg.get("id")  # type: ignore[no-any-return]
        return None

    # -- ConfirmationRequest -> PurchaseOrderAck ----------------------------------

    def _confirmation(self, doc: _Doc, root: Any, body: Any, ctx: MappingContext) -> Sequence[Output]:
        head = doc.need(body, "ConfirmationHeader", "ConfirmationRequest")
        ref = doc.need(body, "OrderReference", "ConfirmationRequest")
        po_number = doc.attr(ref, "orderID", required=True)
        ack_type = doc.attr(head, "type", required=True)
        ack_number = head.get("confirmID") or root.get("payloadID")
        if not ack_number:
            raise MappingError("ConfirmationHeader has no confirmID and the envelope no payloadID",
                               doc.at(head, "@confirmID"))
        lines = []
        for ci in doc.findall(body, "ConfirmationItem"):
            line_no = doc.attr(ci, "lineNumber", required=True)
            unit = doc.text(ci, "UnitOfMeasure")
            item, _supplier = self._item(doc, ci, ctx)
            for st in doc.findall(ci, "ConfirmationStatus"):
                st_type = st.get("type") or "unknown"
                code = CONFIRMATION_STATUS.get(st_type)
                if code is None:
                    raise MappingError(f"ConfirmationStatus type {st_type!r} is not a cXML status",
                                       doc.at(st, "@type"))
                price, _cur = doc.money(st, "UnitPrice")
                lines.append(PurchaseOrderAckLine(
                    line_number=line_no, status=code,
                    quantity=doc.decimal(st, st.get("quantity"), "quantity", required=False),
                    unit=(doc.text(st, "UnitOfMeasure") or unit or None), unit_price=price,
                    expected_date=doc.day(st, st.get("deliveryDate"), "deliveryDate"), item=item,
                ))
        return [PurchaseOrderAck(
            po_number=po_number, vendor=self._vendor(doc, root, "From", ctx), ack_number=ack_number,
            ack_type=ack_type, ack_date=doc.day(head, head.get("noticeDate"), "noticeDate"), lines=lines,
            source_channel=ctx.channel,
        )]

    # -- ShipNoticeRequest -> Shipment ----------------------------------------------

    def _ship_notice(self, doc: _Doc, root: Any, body: Any, ctx: MappingContext) -> Sequence[Output]:
        head = doc.need(body, "ShipNoticeHeader", "ShipNoticeRequest")
        shipment_id = doc.attr(head, "shipmentID", required=True)
        control = doc.find(body, "ShipControl")
        carrier = tracking = None
        if control is not None:
            carrier = doc.text(control, "CarrierIdentifier")
            tracking = doc.text(control, "ShipmentIdentifier")
        po_numbers: list[str] = []
        lines = []
        for portion in doc.findall(body, "ShipNoticePortion"):
            ref = doc.find(portion, "OrderReference")
            po = ref.get("orderID") if ref is not None else None
            if po and po not in po_numbers:
                po_numbers.append(po)
            for sni in doc.findall(portion, "ShipNoticeItem"):
                item, supplier = self._item(doc, sni, ctx)
                batch = doc.find(sni, "Batch")
                lines.append(ShipmentLine(
                    po_number=po, line_number=sni.get("lineNumber"), item=item, vendor_part=supplier,
                    quantity=doc.decimal(sni, sni.get("quantity"), "quantity"),
                    unit=doc.text(sni, "UnitOfMeasure"),
                    lot=(doc.text(batch, "SupplierBatchID") or doc.text(batch, "BuyerBatchID"))
                    if batch is not None else None,
                    serial=doc.text(sni, "SerialNumberInfo/SerialNumber") or doc.text(sni, "SerialNumber"),
                    expires=doc.day(batch, batch.get("expirationDate"), "expirationDate")
                    if batch is not None else None,
                ))
        return [Shipment(
            shipment_id=shipment_id, vendor=self._vendor(doc, root, "From", ctx),
            shipped_at=doc.moment(head, head.get("shipmentDate"), "shipmentDate"),
            expected_at=doc.moment(head, head.get("deliveryDate"), "deliveryDate"),
            carrier=carrier, tracking=tracking, po_numbers=po_numbers, lines=lines, source_channel=ctx.channel,
        )]

    # -- InvoiceDetailRequest -> Invoice --------------------------------------------

    def _invoice(self, doc: _Doc, root: Any, body: Any, ctx: MappingContext) -> Sequence[Output]:
        head = doc.need(body, "InvoiceDetailRequestHeader", "InvoiceDetailRequest")
        invoice_number = doc.attr(head, "invoiceID", required=True)
        summary = doc.need(body, "InvoiceDetailSummary", "InvoiceDetailRequest")
        total = currency = None
        for name in ("DueAmount", "NetAmount", "GrossAmount", "SubtotalAmount"):
            total, currency = doc.money(summary, name)
            if total is not None:
                break
        if total is None:
            raise MappingError("InvoiceDetailSummary has no DueAmount, NetAmount, GrossAmount or SubtotalAmount",
                               doc.at(summary, "DueAmount"))
        tax, _ = doc.money(summary, "Tax")
        shipping, _ = doc.money(summary, "ShippingAmount")
        handling, _ = doc.money(summary, "SpecialHandlingAmount")
        charges = None if shipping is None and handling is None else (shipping or 0) + (handling or 0)
        allowances, _ = doc.money(summary, "InvoiceDetailDiscount")
        po_number = None
        lines = []
        for order in doc.findall(body, "InvoiceDetailOrder"):
            ref = doc.find(order, "InvoiceDetailOrderInfo/OrderReference")
            if ref is None:
                ref = doc.find(order, "InvoiceDetailOrderInfo/OrderIDInfo")
            if ref is not None and po_number is None:
                po_number = ref.get("orderID")
            for it in doc.findall(order, "InvoiceDetailItem"):
                line_no = doc.attr(it, "invoiceLineNumber", required=True)
                ref_el = doc.find(it, "InvoiceDetailItemReference")
                item = supplier = description = po_line = None
                if ref_el is not None:
                    item, supplier = self._item(doc, ref_el, ctx)
                    description = self._description(doc, ref_el, "Description")
                    po_line = ref_el.get("lineNumber")
                price, _ = doc.money(it, "UnitPrice")
                if price is None:
                    raise MappingError(f"InvoiceDetailItem {line_no} has no UnitPrice", doc.at(it, "UnitPrice"))
                amount, _ = doc.money(it, "SubtotalAmount")
                lines.append(InvoiceLine(
                    line_number=line_no, item=item, vendor_part=supplier, description=description,
                    quantity=doc.decimal(it, it.get("quantity"), "quantity"), unit=doc.text(it, "UnitOfMeasure"),
                    unit_price=price, amount=amount, po_line=po_line,
                ))
        return [Invoice(
            invoice_number=invoice_number, vendor=self._vendor(doc, root, "From", ctx),
            invoice_date=doc.day(head, head.get("invoiceDate"), "invoiceDate", required=True),
            po_number=po_number, currency=currency or "USD", total=total, tax=tax, allowances=allowances,
            charges=charges, lines=lines, source_channel=ctx.channel,
        )]

    # -- ProductActivityMessage -> Item ------------------------------------------------

    def _product_activity(self, doc: _Doc, root: Any, body: Any, ctx: MappingContext) -> Sequence[Output]:
        vendor = self._vendor(doc, root, "From", ctx)
        out: list[Output] = []
        for det in doc.findall(body, "ProductActivityDetails"):
            item, supplier = self._item(doc, det, ctx)
            if item is None:
                raise MappingError("ProductActivityDetails has no ItemID", doc.at(det, "ItemID"))
            price_el = det.find(_q(doc.ns, ".//UnitPrice/Money"))
            uom = det.find(_q(doc.ns, ".//UnitOfMeasure"))
            out.append(Item(
                item_code=item, erp_item=ctx.crosswalks.find("item", supplier) if supplier else None,
                description=self._description(doc, det, "Description") or supplier or item,
                unit=((uom.text or "").strip().upper() if uom is not None else "") or self.config.default_unit,
                vendor=vendor, vendor_part=supplier,
                unit_price=doc.decimal(price_el, price_el.text, "UnitPrice") if price_el is not None else None,
                source_channel=ctx.channel,
            ))
        if not out:
            raise MappingError("ProductActivityMessage has no ProductActivityDetails",
                               doc.at(body, "ProductActivityDetails"))
        return out
