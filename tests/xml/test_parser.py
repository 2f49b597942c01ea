"""XmlParser: documents and feeds, namespaces, positions, and every kind of hostile or broken input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import ParseError
from parsers.base import Message
from parsers.xml import XmlParser, XmlParserConfig
from tests.xml.conftest import XML_SAMPLES, Canary

ROOT = Path(__file__).resolve().parents[2]


def parse(data: bytes, **config: object) -> list[Message]:
    return list(XmlParser(XmlParserConfig.model_validate(config)).parse(io.BytesIO(data), name="in.xml"))


def sample(name: str) -> bytes:
    return (XML_SAMPLES / name).read_bytes()


@pytest.mark.parametrize(("name", "kind"), [
    ("order_request.xml", "OrderRequest"),
    ("order_request_ns.xml", "OrderRequest"),
    ("confirmation_request.xml", "ConfirmationRequest"),
    ("ship_notice_request.xml", "ShipNoticeRequest"),
    ("invoice_detail_request.xml", "InvoiceDetailRequest"),
    ("product_activity_message.xml", "ProductActivityMessage"),
])
def test_a_cxml_document_is_one_message_typed_by_its_request(name: str, kind: str) -> None:
    [msg] = parse(sample(name), root=["cXML"])
    assert msg.type == kind
    assert msg.error is None
    assert msg.control_id and msg.control_id.endswith(".com") or msg.control_id.endswith(".org")
    assert msg.position.control == msg.control_id
    assert msg.sender in ("AN01000000099", "987654321")


def test_a_feed_yields_one_message_per_record_element_with_its_line() -> None:
    msgs = parse(sample("catalog_feed.xml"), record_element="cat:Product",
                 namespaces={"cat": "urn:example:legacy:catalog:v2"})
    assert [m.type for m in msgs] == ["Product"] * 3
    assert [m.index for m in msgs] == [0, 1, 2]
    assert [m.position.line for m in msgs] == [4, 11, 16]
    # a record is detached and whole: its children are all there, the namespace intact
    assert msgs[0].data.findtext("{urn:example:legacy:catalog:v2}Sku") == "200100"


def test_a_record_element_given_by_local_name_matches_in_any_namespace() -> None:
    assert len(parse(sample("catalog_feed.xml"), record_element="Product")) == 3
    assert len(parse(sample("catalog_feed.xml"), record_element="{urn:example:legacy:catalog:v2}Product")) == 3
    with pytest.raises(ParseError, match="no <{urn:other}Product> record"):
        parse(sample("catalog_feed.xml"), record_element="{urn:other}Product")


def test_a_feed_of_cxml_envelopes_types_each_by_its_request() -> None:
    body = b"".join(sample(n).split(b"?>", 1)[1].split(b"\n", 2)[2] for n in ("order_request.xml",
                                                                              "ship_notice_request.xml"))
    msgs = parse(b"<Batch>" + body + b"</Batch>", record_element="cXML")
    assert [m.type for m in msgs] == ["OrderRequest", "ShipNoticeRequest"]


def test_malformed_xml_names_the_line_and_column() -> None:
    with pytest.raises(ParseError) as info:
        parse(sample("malformed.xml"))
    err = info.value
    assert err.position.line == 9
    assert err.position.column is not None and err.position.column > 1
    assert "not well-formed" in err.reason and "OrderRequest" in err.reason
    assert "line 9" in str(err)


def test_a_syntax_error_mid_feed_keeps_the_records_before_it() -> None:
    data = b"<Feed>\n<Item>1</Item>\n<Item>2</Item>\n<Item>3</Feed>\n"
    parser = XmlParser(XmlParserConfig(record_element="Item"))
    got: list[Message] = []
    with pytest.raises(ParseError) as info:
        for m in parser.parse(io.BytesIO(data), name="feed.xml"):
            got.append(m)
    assert [m.data.text for m in got] == ["1", "2"]
    assert info.value.position.line == 4 and info.value.position.message == 2


def test_wrong_root_element_is_refused_by_name() -> None:
    with pytest.raises(ParseError, match=r"root element is <PurchaseOrderExport>, expected <cXML>") as info:
        parse(sample("wrong_root.xml"), root=["cXML"])
    assert info.value.position.line == 2
    with pytest.raises(ParseError, match="root element"):
        parse(sample("wrong_root.xml"), root=["cXML"], record_element="Order")


def test_bytes_that_do_not_match_the_declared_encoding_are_a_positioned_error() -> None:
    with pytest.raises(ParseError) as info:
        parse(sample("wrong_encoding.xml"))
    assert info.value.position.line == 4 and info.value.position.column
    assert "encoding" in info.value.reason.lower() or "utf-8" in info.value.reason.lower()


def test_an_unknown_encoding_declaration_is_a_positioned_error() -> None:
    with pytest.raises(ParseError, match="klingon") as info:
        parse(sample("unknown_encoding.xml"))
    assert info.value.position.line == 1


def test_empty_file_and_oversized_document() -> None:
    with pytest.raises(ParseError, match="empty"):
        parse(b"")
    with pytest.raises(ParseError, match="empty"):
        parse(b"", record_element="Item")
    big = b"<Feed>" + b"<Item>x</Item>" * 1000 + b"</Feed>"
    with pytest.raises(ParseError, match="max_document_bytes"):
        parse(big, max_document_bytes=4096)
    assert len(parse(big, max_document_bytes=4096, record_element="Item")) == 1000


def test_a_cxml_envelope_without_a_request_is_a_message_error() -> None:
    [msg] = parse(b'<cXML payloadID="p1@x"><Header/></cXML>')
    assert msg.error is not None and "no Request" in msg.error.reason


# -- hostile input ---------------------------------------------------------------


# libxml2 refuses some of these itself (an external entity in an attribute value, an
# entity amplification past its limit); the rest the parser refuses for declaring entities
REFUSED = "declares entities|external entity|amplification"


def xxe_file(secret: Path, *, in_attribute: bool) -> bytes:
    ref = '<OrderRequestHeader orderID="&xxe;"/>' if in_attribute else "<Comments>&xxe;</Comments>"
    return (f'<?xml version="1.0"?>\n<!DOCTYPE cXML [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
            f'<cXML payloadID="x@x"><Header/><Request><OrderRequest>{ref}</OrderRequest></Request></cXML>').encode()


@pytest.mark.parametrize("in_attribute", [False, True])
@pytest.mark.parametrize("record_element", [None, "OrderRequest"])
def test_xxe_to_a_local_file_reads_nothing(tmp_path: Path, record_element: str | None, in_attribute: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-FILE-CONTENT-7731")
    with pytest.raises(ParseError, match=REFUSED) as info:
        parse(xxe_file(secret, in_attribute=in_attribute), record_element=record_element)
    assert "SECRET-FILE-CONTENT" not in str(info.value)


@pytest.mark.parametrize("record_element", [None, "OrderRequestHeader"])
def test_xxe_to_a_url_contacts_nothing(canary: Canary, record_element: str | None) -> None:
    docs = [
        f'<!DOCTYPE cXML [<!ENTITY e SYSTEM "{canary.url}/entity">]><cXML><Header>&e;</Header></cXML>',
        f'<!DOCTYPE cXML [<!ENTITY % p SYSTEM "{canary.url}/param.dtd"> %p;]><cXML><Header>&leak;</Header></cXML>',
    ]
    for doc in docs:
        with pytest.raises(ParseError) as info:
            parse(doc.encode(), record_element=record_element)
        assert "CANARY-CONTENT" not in str(info.value)
    assert canary.hits == []


def test_a_remote_dtd_reference_is_not_fetched(canary: Canary) -> None:
    doc = sample("order_request.xml").replace(b"http://xml.cxml.org/schemas/cXML/1.2.014/cXML.dtd",
                                              f"{canary.url}/cXML.dtd".encode())
    [msg] = parse(doc)
    assert msg.type == "OrderRequest" and msg.error is None
    [msg] = parse(doc, record_element="cXML")
    assert msg.type == "OrderRequest"
    assert canary.hits == []


def test_billion_laughs_is_refused_without_expanding() -> None:
    with pytest.raises(ParseError, match=REFUSED):
        parse(sample("billion_laughs.xml"))
    with pytest.raises(ParseError, match=REFUSED):
        parse(sample("billion_laughs.xml"), record_element="OrderRequestHeader")
    # the same bomb referenced from element content: refused too, nothing expanded
    in_content = sample("billion_laughs.xml").replace(b'<OrderRequestHeader orderID="&lol9;"/>',
                                                      b"<Comments>&lol9;&lol9;&lol9;</Comments>")
    for record_element in (None, "Comments"):
        with pytest.raises(ParseError, match=REFUSED):
            parse(in_content, record_element=record_element)


def test_a_feed_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 16 MB feed of ~90,000 records: peak RSS grows by far less than the file (a subprocess measures)."""
    out = subprocess.run([sys.executable, "-m", "tests.xml.stream_probe", str(tmp_path / "feed.xml"), "16"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    count, before_kb, peak_kb = (int(x) for x in out.stdout.split())
    assert count > 80_000
    assert peak_kb - before_kb < 8 * 1024, f"RSS grew {peak_kb - before_kb} KB streaming a 16 MB feed"
