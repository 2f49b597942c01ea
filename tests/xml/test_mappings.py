"""cXML and XPath mappings: each document type to its canonical record, outbound round trip, Response."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree
from pydantic import ValidationError

from bridge.errors import MappingError, MasterDataError
from mappings.base import MappingContext
from mappings.canonical import PurchaseOrder, PurchaseOrderLine
from mappings.cxml import CxmlMapping, CxmlMappingConfig
from mappings.cxml_outbound import CxmlVendorProfile, cxml_response, render_order_request
from mappings.xml_xpath import XPathMapping, XPathMappingConfig
from parsers.xml import XmlParser, XmlParserConfig, safe_parser
from tests.helpers import DictCrosswalks
from tests.xml.conftest import CROSSWALK, XML_SAMPLES


def ctx(entries: dict[str, dict[str, str]] | None = None) -> MappingContext:
    return MappingContext(channel="supplier-net", file_name="in.xml", inbound_id=1,
                          received_at=datetime(2026, 11, 26, tzinfo=UTC),
                          crosswalks=DictCrosswalks(CROSSWALK if entries is None else entries))


def map_doc(data: bytes, **config: Any) -> list[Any]:
    [msg] = XmlParser(XmlParserConfig(root=["cXML"])).parse(io.BytesIO(data), name="in.xml")
    return list(CxmlMapping(CxmlMappingConfig.model_validate(config)).map(msg, ctx()))


def sample(name: str) -> bytes:
    return (XML_SAMPLES / name).read_bytes()


@pytest.mark.parametrize("name", ["order_request.xml", "order_request_ns.xml"])
def test_order_request_to_purchase_order(name: str) -> None:
    [po] = map_doc(sample(name))
    assert isinstance(po, PurchaseOrder)
    assert (po.po_number, po.vendor, po.order_date) == ("PO-2026-1001", "V-EXMED", date(2026, 11, 20))
    assert (po.purpose, po.status, po.currency, po.total) == ("original", "open", "USD", Decimal("187.50"))
    assert (po.ship_to, po.bill_to, po.source_channel) == ("DOCK-MAIN", "AP-CENTRAL", "supplier-net")
    first, second = po.lines
    assert first == PurchaseOrderLine(line_number="1", item="100234", vendor_part="GZ-4X4-200",
                                      description="Gauze sponge 4x4 in, sterile, box of 200",
                                      quantity=Decimal(10), unit="BX", unit_price=Decimal("12.50"),
                                      cost_center="4410", need_by=date(2026, 11, 25))
    # no BuyerPartID: the item crosswalk gives the ERP item for the supplier's part
    assert (second.item, second.vendor_part, second.unit) == ("100235", "GLV-NIT-M", "BX")
    assert second.description == "Nitrile exam gloves, medium"


def test_confirmation_request_to_purchase_order_ack() -> None:
    [ack] = map_doc(sample("confirmation_request.xml"))
    assert (ack.po_number, ack.vendor, ack.ack_number, ack.ack_type) == (
        "PO-2026-1001", "V-EXMED", "CONF-88812", "detail")
    assert ack.ack_date == date(2026, 11, 20)
    assert [(ln.line_number, ln.status, ln.quantity, ln.expected_date) for ln in ack.lines] == [
        ("1", "IA", Decimal(10), date(2026, 11, 24)),
        ("2", "IA", Decimal(3), date(2026, 11, 24)),
        ("2", "IB", Decimal(2), date(2026, 12, 8)),
    ]


def test_ship_notice_request_to_shipment() -> None:
    [shp] = map_doc(sample("ship_notice_request.xml"))
    assert (shp.shipment_id, shp.vendor, shp.carrier, shp.tracking) == (
        "ASN-55120", "V-EXMED", "Example Freight", "EXF000123456789")
    assert shp.shipped_at == datetime(2026, 11, 23, 13, 30, tzinfo=UTC)
    assert shp.po_numbers == ["PO-2026-1001"]
    one, two = shp.lines
    assert (one.item, one.lot, one.expires, one.quantity, one.unit) == (
        "100234", "LOT-A7731", date(2029, 6, 30), Decimal(10), "BX")
    assert (two.item, two.vendor_part, two.lot) == ("100235", "GLV-NIT-M", None)


def test_invoice_detail_request_to_invoice() -> None:
    [inv] = map_doc(sample("invoice_detail_request.xml"))
    assert (inv.invoice_number, inv.vendor, inv.invoice_date, inv.po_number) == (
        "INV-300417", "V-EXMED", date(2026, 11, 25), "PO-2026-1001")
    assert (inv.total, inv.tax, inv.charges, inv.allowances) == (
        Decimal("182.25"), Decimal("13.00"), Decimal("10.00"), Decimal("3.25"))
    assert [(ln.line_number, ln.item, ln.quantity, ln.unit_price, ln.amount, ln.po_line) for ln in inv.lines] == [
        ("1", "GZ-4X4-200", Decimal(10), Decimal("12.50"), Decimal("125.00"), "1"),
        ("2", "100235", Decimal(3), Decimal("12.50"), Decimal("37.50"), "2"),
    ]


def test_product_activity_message_to_items_only_when_accepted() -> None:
    with pytest.raises(MappingError, match="ProductActivityMessage is not accepted"):
        map_doc(sample("product_activity_message.xml"))
    items = map_doc(sample("product_activity_message.xml"), accept=["ProductActivityMessage"])
    assert [(i.item_code, i.vendor_part, i.unit, i.vendor) for i in items] == [
        ("100234", "GZ-4X4-200", "BX", "V-EXMED"), ("100777", "SUT-3-0-PGA", "EA", "V-EXMED")]


def test_unknown_vendor_is_master_data_and_optional_mode_falls_back() -> None:
    [msg] = XmlParser().parse(io.BytesIO(sample("invoice_detail_request.xml")), name="in.xml")
    with pytest.raises(MasterDataError) as info:
        CxmlMapping().map(msg, ctx({}))
    assert info.value.kind == "vendor" and info.value.key == "987654321"
    assert info.value.position.field == "Header/From/Credential/Identity"
    [inv] = CxmlMapping(CxmlMappingConfig(vendor_crosswalk="optional")).map(msg, ctx({}))
    assert inv.vendor == "987654321"


def test_a_missing_required_part_names_the_element() -> None:
    doc = sample("order_request.xml").replace(b' lineNumber="2"', b"")
    with pytest.raises(MappingError, match="ItemOut.*lineNumber") as info:
        map_doc(doc)
    assert info.value.position.line is not None
    doc = sample("order_request.xml").replace(b'orderDate="2026-11-20T10:15:00-05:00" type="new"',
                                              b'orderDate="20.11.2026" type="new"')
    with pytest.raises(MappingError, match="orderDate is not an ISO 8601 date"):
        map_doc(doc)


# -- outbound ------------------------------------------------------------------------

PROFILE = CxmlVendorProfile(from_identity="AN01000000099", to_identity="987654321",
                            sender_identity="AN01000000099", shared_secret="dummy-secret")


def purchase_order() -> PurchaseOrder:
    return PurchaseOrder(
        po_number="PO-OUT-77", vendor="V-EXMED", order_date=date(2026, 11, 26), currency="USD",
        ship_to="DOCK-MAIN", bill_to="AP-CENTRAL", total=Decimal("142.40"), source_channel="supplier-net",
        lines=[
            PurchaseOrderLine(line_number="1", item="100234", vendor_part="GZ-4X4-200", description="Gauze <4x4> & co",
                              quantity=Decimal(4), unit="BX", unit_price=Decimal("12.50"), cost_center="4410",
                              need_by=date(2026, 12, 1)),
            PurchaseOrderLine(line_number="2", item="100235", vendor_part="GLV-NIT-M", quantity=Decimal("7.5"),
                              unit="CS", unit_price=Decimal("12.32")),
        ])


def test_purchase_order_renders_as_a_cxml_order_request_and_round_trips() -> None:
    po = purchase_order()
    doc = render_order_request(po, PROFILE, payload="1.2.3@bridge.example", timestamp=datetime(2026, 11, 26, 12,
                                                                                                   tzinfo=UTC))
    tree = etree.fromstring(doc, safe_parser())
    assert tree.tag == "cXML" and tree.get("payloadID") == "1.2.3@bridge.example"
    assert tree.get("timestamp") == "2026-11-26T12:00:00+00:00"
    assert tree.getroottree().docinfo.system_url.endswith("/cXML.dtd")
    assert tree.findtext("Header/From/Credential/Identity") == "AN01000000099"
    assert tree.findtext("Header/To/Credential/Identity") == "987654321"
    assert tree.findtext("Header/Sender/Credential/SharedSecret") == "dummy-secret"
    assert len(tree.findall("Request/OrderRequest/ItemOut")) == 2
    [back] = map_doc(doc)
    assert back == po


def test_a_profile_never_shows_its_secret() -> None:
    assert "dummy-secret" not in repr(PROFILE) and "dummy-secret" not in str(PROFILE.model_dump())
    with pytest.raises(ValidationError):
        CxmlVendorProfile.model_validate({"from_identity": "a", "to_identity": "b", "sender_identity": "c",
                                          "shared_secret": "s", "typo": 1})


@pytest.mark.parametrize(("code", "text"), [(200, "OK"), (400, "Bad Request"), (500, "Internal Server Error")])
def test_cxml_response_status(code: int, text: str) -> None:
    doc = cxml_response(code, None if code == 200 else "document refused: line 9 column 30")
    root = etree.fromstring(doc, safe_parser())
    status = root.find("Response/Status")
    assert root.tag == "cXML" and root.get("payloadID") and root.get("timestamp")
    assert (status.get("code"), status.get("text")) == (str(code), text)
    assert (status.text or "").startswith("document refused") == (code != 200)


# -- XPath mapping -----------------------------------------------------------------------

CATALOG = {
    "record_type": "item",
    "namespaces": {"cat": "urn:example:legacy:catalog:v2"},
    "fields": {
        "item_code": {"xpath": "cat:Sku", "required": True},
        "description": "cat:Name",
        "unit": {"xpath": "cat:Uom", "default": "EA"},
        "unit_price": {"xpath": "cat:Price", "type": "decimal"},
        "currency": "cat:Price/@currency",
        "gtin": "cat:Gtin",
        "vendor": {"xpath": "@supplier", "crosswalk": "vendor"},
    },
}


def test_xpath_mapping_maps_a_namespaced_feed_without_code() -> None:
    parser = XmlParser(XmlParserConfig(record_element="cat:Product",
                                       namespaces={"cat": "urn:example:legacy:catalog:v2"}))
    mapping = XPathMapping(XPathMappingConfig.model_validate(CATALOG))
    msgs = list(parser.parse(io.BytesIO(sample("catalog_feed.xml")), name="catalog.xml"))
    first, second = (mapping.map(m, ctx())[0] for m in msgs[:2])
    assert (first.item_code, first.description, first.unit, first.unit_price, first.gtin, first.vendor) == (
        "200100", "Syringe 10 mL luer lock", "BX", Decimal("18.40"), "00812345000019", "V-EXMED")
    assert first.source_channel == "supplier-net"
    assert (second.unit, second.gtin) == ("EA", None)
    with pytest.raises(MappingError, match="field unit_price is not a valid decimal") as info:
        mapping.map(msgs[2], ctx())
    assert info.value.position.line == 16 and "not-a-price" not in str(info.value)


def test_xpath_mapping_builds_nested_lines_and_several_records_per_message() -> None:
    config = {
        "record_type": "purchase_order", "records": "Order",
        "fields": {
            "po_number": "@no", "vendor": "@vendor", "order_date": {"xpath": "@date", "type": "date"},
            "lines": {"each": "Line", "fields": {"line_number": "@n", "item": "Item",
                                                 "quantity": {"xpath": "Qty", "type": "decimal"},
                                                 "unit": "Uom"}},
        },
    }
    doc = (b'<Export><Order no="A1" vendor="V1" date="2026-11-01"><Line n="1"><Item>I1</Item><Qty>2</Qty>'
           b'<Uom>EA</Uom></Line><Line n="2"><Item>I2</Item><Qty>1.5</Qty><Uom>CS</Uom></Line></Order>'
           b'<Order no="A2" vendor="V1" date="2026-11-02"><Line n="1"><Item>I3</Item><Qty>1</Qty><Uom>EA</Uom>'
           b'</Line></Order></Export>')
    [msg] = XmlParser().parse(io.BytesIO(doc), name="export.xml")
    pos = XPathMapping(XPathMappingConfig.model_validate(config)).map(msg, ctx())
    assert [(p.po_number, [(ln.item, ln.quantity) for ln in p.lines]) for p in pos] == [
        ("A1", [("I1", Decimal(2)), ("I2", Decimal("1.5"))]), ("A2", [("I3", Decimal(1))])]


def test_xpath_mapping_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="field item_code: XPath does not compile"):
        XPathMappingConfig.model_validate({"record_type": "item", "fields": {"item_code": "Sku[["}})
    with pytest.raises(ValidationError, match="not a canonical record type"):
        XPathMappingConfig.model_validate({"record_type": "widget", "fields": {"a": "b"}})
    with pytest.raises(ValidationError, match="colour are not fields of item"):
        XPathMappingConfig.model_validate({"record_type": "item", "fields": {"colour": "C"}})
