"""cXML and XML feeds through land + Processor on SQLite and PostgreSQL: records, events, failures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import events, failures, inbound_files, records
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig
from mappings.crosswalks import upsert_entries
from tests.xml.conftest import CROSSWALK, XML_SAMPLES, Canary

CXML_CHANNEL = {
    "source": {"type": "folder", "path": "/nonexistent"},
    "parser": {"type": "xml", "root": ["cXML"]},
    "mapping": {"type": "cxml", "accept": ["OrderRequest", "ConfirmationRequest", "ShipNoticeRequest",
                                           "InvoiceDetailRequest", "ProductActivityMessage"]},
}
CATALOG_CHANNEL = {
    "source": {"type": "folder", "path": "/nonexistent"},
    "parser": {"type": "xml", "record_element": "cat:Product", "namespaces": {"cat": "urn:example:legacy:catalog:v2"}},
    "mapping": {"type": "xml_xpath", "record_type": "item", "namespaces": {"cat": "urn:example:legacy:catalog:v2"},
                "fields": {"item_code": {"xpath": "cat:Sku", "required": True}, "description": "cat:Name",
                           "unit": {"xpath": "cat:Uom", "default": "EA"},
                           "unit_price": {"xpath": "cat:Price", "type": "decimal"},
                           "vendor": {"xpath": "@supplier", "crosswalk": "vendor"}}},
}


def processor(db: Database, archive: Archive) -> Processor:
    with db.write() as conn:
        for kind, entries in CROSSWALK.items():
            upsert_entries(conn, kind, [{"source_code": k, "target_code": v} for k, v in entries.items()])
    channels = {
        "supplier-net": build_channel("supplier-net", ChannelConfig.model_validate(CXML_CHANNEL)),
        "catalog": build_channel("catalog", ChannelConfig.model_validate(CATALOG_CHANNEL)),
    }
    return Processor(db, archive, channels)


def ingest(db: Database, archive: Archive, proc: Processor, data: bytes, name: str,
           channel: str = "supplier-net") -> Any:
    landed = land(db, archive, channel=channel, src=io.BytesIO(data), name=name)
    result = proc.process(landed.inbound_id)
    assert result is not None
    return result


def stored(db: Database, rtype: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(records.c.data).where(records.c.type == rtype).order_by(records.c.id)).all()
    return [orjson.loads(r.data) for r in rows]


def all_failures(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(failures).order_by(failures.c.id)).all())


def everything_stored(db: Database) -> str:
    """Every text the database holds about inbound files: records, events, failures, file errors."""
    with db.read() as conn:
        parts = [r.data for r in conn.execute(select(records.c.data))]
        parts += [r.payload for r in conn.execute(select(events.c.payload))]
        parts += [f"{r.reason} {r.position}" for r in conn.execute(select(failures))]
        parts += [r.error or "" for r in conn.execute(select(inbound_files.c.error))]
    return "\n".join(parts)


def test_each_cxml_document_type_lands_as_its_record_with_an_event(db: Database, archive: Archive) -> None:
    proc = processor(db, archive)
    for name, rtype in [("order_request.xml", "purchase_order"), ("confirmation_request.xml", "purchase_order_ack"),
                        ("ship_notice_request.xml", "shipment"), ("invoice_detail_request.xml", "invoice"),
                        ("product_activity_message.xml", "item")]:
        result = ingest(db, archive, proc, (XML_SAMPLES / name).read_bytes(), name)
        assert (result.status, result.failures) == ("processed", 0), name
        assert stored(db, rtype), name
    [po] = stored(db, "purchase_order")
    assert (po["po_number"], po["vendor"], po["total"]) == ("PO-2026-1001", "V-EXMED", "187.50")
    [inv] = stored(db, "invoice")
    assert inv["total"] == "182.25" and len(inv["lines"]) == 2
    with db.read() as conn:
        types = sorted(r.event_type for r in conn.execute(select(events.c.event_type)))
    assert types == sorted(["purchase_order.order.recorded", "purchase_order.ack.recorded",
                            "supply.shipment.recorded", "ap.invoice.recorded", "item.master.recorded",
                            "item.master.recorded"])


def test_a_replayed_order_updates_instead_of_duplicating(db: Database, archive: Archive) -> None:
    proc = processor(db, archive)
    doc = (XML_SAMPLES / "order_request.xml").read_bytes()
    ingest(db, archive, proc, doc, "po.xml")
    changed = doc.replace(b'type="new"', b'type="update"').replace(b"ord1001@", b"ord1001b@")
    assert ingest(db, archive, proc, changed, "po-change.xml").status == "processed"
    [po] = stored(db, "purchase_order")
    assert po["purpose"] == "change"
    with db.read() as conn:
        types = [r.event_type for r in conn.execute(select(events.c.event_type).order_by(events.c.seq))]
    assert types == ["purchase_order.order.recorded", "purchase_order.order.updated"]


def test_an_unknown_vendor_is_quarantined_as_master_data(db: Database, archive: Archive) -> None:
    proc = processor(db, archive)
    doc = (XML_SAMPLES / "invoice_detail_request.xml").read_bytes().replace(b"987654321", b"111111111")
    result = ingest(db, archive, proc, doc, "inv.xml")
    assert result.status == "failed"
    [f] = all_failures(db)
    assert (f.category, f.kind, f.key, f.message_index) == ("master_data", "vendor", "111111111", 0)
    assert orjson.loads(f.position)["control"].startswith("1764100000000")


def test_malformed_xml_fails_the_file_with_line_and_column(db: Database, archive: Archive) -> None:
    proc = processor(db, archive)
    result = ingest(db, archive, proc, (XML_SAMPLES / "malformed.xml").read_bytes(), "bad.xml")
    assert result.status == "failed"
    [f] = all_failures(db)
    pos = orjson.loads(f.position)
    assert (f.category, pos["file"], pos["line"]) == ("parse", "bad.xml", 9) and pos["column"] > 1


@pytest.mark.parametrize("sample", ["wrong_root.xml", "wrong_encoding.xml", "billion_laughs.xml"])
def test_bad_documents_fail_as_parse_errors(db: Database, archive: Archive, sample: str) -> None:
    proc = processor(db, archive)
    result = ingest(db, archive, proc, (XML_SAMPLES / sample).read_bytes(), sample)
    assert result.status == "failed" and result.records == 0
    [f] = all_failures(db)
    assert f.category == "parse"
    assert "lol" not in everything_stored(db).replace("billion_laughs", "")


def test_xxe_through_the_pipeline_leaks_nothing(db: Database, archive: Archive, tmp_path: Path,
                                               canary: Canary) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-FILE-CONTENT-7731")
    proc = processor(db, archive)
    docs = [
        f'<!DOCTYPE cXML [<!ENTITY x SYSTEM "file://{secret}">]><cXML payloadID="a@x"><Header/><Request>'
        f'<OrderRequest><OrderRequestHeader orderID="P1" orderDate="2026-11-20"><Comments>&x;</Comments>'
        f'</OrderRequestHeader></OrderRequest></Request></cXML>',
        f'<!DOCTYPE cXML [<!ENTITY x SYSTEM "{canary.url}/x">]><cXML payloadID="b@x"><Header>&x;</Header></cXML>',
        f'<!DOCTYPE cXML SYSTEM "{canary.url}/cXML.dtd"><cXML payloadID="c@x"><Header/></cXML>',
    ]
    for i, doc in enumerate(docs):
        assert ingest(db, archive, proc, doc.encode(), f"evil{i}.xml").status == "failed"
    assert len(all_failures(db)) == 3
    dump = everything_stored(db)
    assert "SECRET-FILE-CONTENT" not in dump and "CANARY-CONTENT" not in dump
    assert canary.hits == []


def test_a_catalog_feed_maps_by_xpath_and_quarantines_only_the_bad_record(db: Database, archive: Archive) -> None:
    proc = processor(db, archive)
    result = ingest(db, archive, proc, (XML_SAMPLES / "catalog_feed.xml").read_bytes(), "catalog.xml",
                    channel="catalog")
    assert (result.status, result.messages, result.records) == ("partial", 3, 2)
    items = stored(db, "item")
    assert [(i["item_code"], i["unit"], i["unit_price"], i["vendor"]) for i in items] == [
        ("200100", "BX", "18.40", "V-EXMED"), ("200101", "EA", "21.10", "V-EXMED")]
    [f] = all_failures(db)
    pos = orjson.loads(f.position)
    assert (f.category, f.message_index, pos["line"], pos["field"]) == ("mapping", 2, 16, "unit_price")
