"""cXML documents bridge writes: a PurchaseOrder as an OrderRequest, and the Response to a sender.

:func:`render_order_request` follows the cXML 1.2 User's Guide ("Purchase
Orders"): a ``cXML`` envelope with ``payloadID`` and ``timestamp``, a
``Header`` with ``From`` (the buyer), ``To`` (the supplier) and ``Sender``
(the buyer's credential with its ``SharedSecret``), then
``Request/OrderRequest`` with an ``OrderRequestHeader`` and one ``ItemOut`` per
line. The credentials come from the vendor's :class:`CxmlVendorProfile`. The
document parses back through :class:`parsers.xml.XmlParser` and
:class:`mappings.cxml.CxmlMapping` to the same PurchaseOrder (the vendor via
the ``vendor`` crosswalk from the profile's ``to_identity``); that is tested.
``SupplierPartID`` is required by cXML: a line without a vendor part number
sends the ERP item there, and so reads back with ``vendor_part`` set to it.

:func:`cxml_response` builds the synchronous ``<cXML><Response><Status/>``
a sender expects when it posts a document (cXML 1.2 "Response": 200 OK,
4xx for a document we refuse, 5xx when we could not take it). Its text never
quotes the document's content.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.errors import ConfigError
from mappings.canonical import PurchaseOrder
from mappings.cxml import HEADER_COST_CENTER, ORDER_PURPOSE

__all__ = ["CXML_VERSION", "CxmlCredentials", "CxmlPartnerConfig", "CxmlVendorProfile", "cxml_response", "payload_id", "render_order_request"]

CXML_VERSION = "1.2.014"
_DOCTYPE = f'<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/{CXML_VERSION}/cXML.dtd">'
_TYPE_FOR_PURPOSE = {v: k for k, v in ORDER_PURPOSE.items()}
#: cXML Status text for the codes bridge answers with (cXML 1.2, "Status" element)
STATUS_TEXT = {200: "OK", 201: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 406: "Not Acceptable",
               409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class CxmlCredentials(BaseModel):
    """How one vendor is addressed over cXML (``From``/``To``/``Sender``), without the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_domain: str = "NetworkID"
    from_identity: str
    to_domain: str = "DUNS"
    to_identity: str
    sender_domain: str = "NetworkID"
    sender_identity: str
    user_agent: str = "bridge"
    deployment_mode: str = "production"
    lang: str = "en-US"


class CxmlVendorProfile(CxmlCredentials):
    """The credentials with the ``Sender`` shared secret: what rendering needs."""

    shared_secret: SecretStr


class CxmlPartnerConfig(CxmlCredentials):
    """A trading partner's ``cxml:`` block in ``bridge.yaml`` (``parsers.x12.partners.PartnerConfig``).

    The shared secret is never in the YAML: ``shared_secret_env`` names the
    environment variable holding it, read when a document is rendered.
    ``destination`` is the one destination that receives this vendor's orders.
    """

    shared_secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    destination: str = Field(min_length=1)

    def profile(self, environ: Mapping[str, str] | None = None) -> CxmlVendorProfile:
        """The profile with the secret read from the environment; ConfigError naming the variable if unset."""
        secret = (os.environ if environ is None else environ).get(self.shared_secret_env)
        if not secret:
            raise ConfigError(f"cxml.shared_secret_env ({self.shared_secret_env})",
                              "environment variable is not set; it holds the cXML Sender shared secret")
        fields = self.model_dump(exclude={"shared_secret_env", "destination"})
        return CxmlVendorProfile(**fields, shared_secret=SecretStr(secret))


def payload_id(domain: str | None = None) -> str:
    """A cXML payloadID: ``<epoch ms>.<pid>.<random>@<domain>``, unique per document."""
    return f"{int(time.time() * 1000)}.{os.getpid()}.{uuid.uuid4().hex[:12]}@{domain or socket.gethostname()}"


def _sub(parent: etree._Element, tag: str, content: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if content is not None:
        el.text = content
    return el


def _lang(el: etree._Element, lang: str) -> None:
    el.set("{http://www.w3.org/XML/1998/namespace}lang", lang)


def _credential(parent: etree._Element, domain: str, identity: str, secret: str | None = None) -> None:
    cred = _sub(parent, "Credential", domain=domain)
    _sub(cred, "Identity", identity)
    if secret is not None:
        _sub(cred, "SharedSecret", secret)


def _money(parent: etree._Element, tag: str, amount: Decimal, currency: str) -> None:
    _sub(_sub(parent, tag), "Money", str(amount), currency=currency)


def render_order_request(po: PurchaseOrder, profile: CxmlVendorProfile, *, payload: str | None = None,
                         timestamp: datetime | None = None) -> bytes:
    """Render ``po`` as a cXML 1.2 OrderRequest (UTF-8 bytes, with the cXML DOCTYPE)."""
    ts = (timestamp or datetime.now(UTC)).isoformat(timespec="seconds")
    root = etree.Element("cXML", {"payloadID": payload or payload_id(), "timestamp": ts})
    _lang(root, profile.lang)
    header = _sub(root, "Header")
    _credential(_sub(header, "From"), profile.from_domain, profile.from_identity)
    _credential(_sub(header, "To"), profile.to_domain, profile.to_identity)
    sender = _sub(header, "Sender")
    _credential(sender, profile.sender_domain, profile.sender_identity, profile.shared_secret.get_secret_value())
    _sub(sender, "UserAgent", profile.user_agent)
    request = _sub(root, "Request", deploymentMode=profile.deployment_mode)
    order = _sub(request, "OrderRequest")
    head = _sub(order, "OrderRequestHeader", orderID=po.po_number, orderDate=po.order_date.isoformat(),
                type=_TYPE_FOR_PURPOSE.get(po.purpose, "new"))
    if po.total is not None:
        _money(head, "Total", po.total, po.currency)
    for tag, address_id in (("ShipTo", po.ship_to), ("BillTo", po.bill_to)):
        if address_id:
            address = _sub(_sub(head, tag), "Address", addressID=address_id)
            _lang(_sub(address, "Name", address_id), "en")
    if po.cost_center:
        # cXML has no header cost-center element: an Extrinsic, last in OrderRequestHeader
        _sub(head, "Extrinsic", po.cost_center, name=HEADER_COST_CENTER)
    for line in po.lines:
        attrs = {"quantity": str(line.quantity), "lineNumber": line.line_number}
        if line.need_by is not None:
            attrs["requestedDeliveryDate"] = line.need_by.isoformat()
        item_out = _sub(order, "ItemOut", **attrs)
        item_id = _sub(item_out, "ItemID")
        _sub(item_id, "SupplierPartID", line.vendor_part or line.item)
        _sub(item_id, "BuyerPartID", line.item)
        detail = _sub(item_out, "ItemDetail")
        _money(detail, "UnitPrice", line.unit_price if line.unit_price is not None else Decimal(0), po.currency)
        if line.description:
            _lang(_sub(detail, "Description", line.description), "en")
        _sub(detail, "UnitOfMeasure", line.unit)
        if line.cost_center:
            dist = _sub(item_out, "Distribution")
            acct = _sub(dist, "Accounting", name="CostCenter")
            seg = _sub(acct, "AccountingSegment", id=line.cost_center)
            _lang(_sub(seg, "Name", "Cost Center"), "en")
            _lang(_sub(seg, "Description", line.cost_center), "en")
            charge = (line.unit_price or Decimal(0)) * line.quantity
            _money(dist, "Charge", charge, po.currency)
    body = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + _DOCTYPE.encode() + b"\n" + body


def cxml_response(code: int = 200, reason: str | None = None, *, timestamp: datetime | None = None) -> bytes:
    """The cXML ``Response`` for a posted document: ``<Status code="200" text="OK"/>`` or an error.

    ``reason`` (for 4xx/5xx) becomes the Status element's content, as cXML puts
    the human-readable detail there; it must not quote the document.
    """
    ts = (timestamp or datetime.now(UTC)).isoformat(timespec="seconds")
    root = etree.Element("cXML", {"payloadID": payload_id(), "timestamp": ts})
    response = _sub(root, "Response")
    status = _sub(response, "Status", code=str(code), text=STATUS_TEXT.get(code, "OK" if code < 300 else "Error"))
    if reason and code >= 300:
        status.text = reason
    body = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + _DOCTYPE.encode() + b"\n" + body
