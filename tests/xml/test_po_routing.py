"""Purchase orders through the API go out in the format the vendor's profile names: an X12 850 to an
X12 vendor, a cXML OrderRequest to a cXML vendor, each only to that vendor's destination; the cXML
document parses back through bridge's own parser to the stored PurchaseOrder, and the timeline
shows ``sent`` once the relay delivered it."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.db.tables import events
from bridge.settings import Settings
from mappings.base import MappingContext
from mappings.canonical import PurchaseOrder
from mappings.crosswalks import upsert_entries
from mappings.cxml import CxmlMapping
from parsers.xml import XmlParser, XmlParserConfig
from tests.api.conftest import assert_problem, auth
from tests.helpers import DictCrosswalks
from tests.outbox.helpers import delivery_rows, make_relay

SECRET_ENV = "BRIDGE_TEST_EXMED_CXML_SECRET"
SECRET = "s3cret-for-exmed"
PARTNERS = {
    "acme": {"isa_id": "ACMEMED", "our_isa_id": "BRIDGEHOSP", "vendor": "V-MED", "return_channel": "acme_out"},
    "exmed": {"isa_id": "EXMED", "our_isa_id": "BRIDGEHOSP", "vendor": "V-EXMED", "po_format": "cxml",
              "cxml": {"from_identity": "AN01000000099", "to_identity": "987654321",
                       "sender_identity": "AN01000000099", "shared_secret_env": SECRET_ENV,
                       "destination": "exmed_out"}},
}
LINES = [{"item": "ITM-1001", "vendor_part": "GZ-4X4-200", "description": "Gauze sponge 4x4", "quantity": "10",
          "unit": "BX", "unit_price": "12.5", "need_by": "2026-12-01"},
         {"item": "ITM-2002", "vendor_part": "GLV-NIT-M", "quantity": "4", "unit": "CS", "unit_price": "89", "cost_center": "CC-4200"}]


@pytest.fixture
def po_api(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with db.write() as conn:
        upsert_entries(conn, "vendor", [{"source_code": "ACMEMED", "target_code": "V-MED"},
                                        {"source_code": "987654321", "target_code": "V-EXMED"}])
        upsert_entries(conn, "item", [{"source_code": "L1001", "target_code": "ITM-1001"},
                                      {"source_code": "L2002", "target_code": "ITM-2002"}])
        upsert_entries(conn, "department", [{"source_code": "ICU", "target_code": "CC-4100"},
                                            {"source_code": "ED", "target_code": "CC-4200"}])
    settings = Settings.model_validate({"data_dir": str(tmp_path / "var"), "partners": PARTNERS})
    key = create_client(db, "buyer", ["purchase-orders:write", "records:read"])[1]
    with TestClient(create_app(settings, db)) as api:
        yield api, key


def _post(api: TestClient, key: str, vendor: str, number: str) -> Any:
    body = {"po_number": number, "vendor": vendor, "order_date": "2026-11-26", "cost_center": "ICU",
            "ship_to": "DOCK-MAIN", "bill_to": "AP-CENTRAL", "lines": LINES}
    return api.post("/v1/purchase-orders", json=body, headers={**auth(key), "Idempotency-Key": number})


def _parse_back(content: bytes) -> PurchaseOrder:
    [msg] = XmlParser(XmlParserConfig(root=["cXML"])).parse(io.BytesIO(content), name="out.xml")
    ctx = MappingContext(channel="api", file_name="out.xml", inbound_id=0, received_at=datetime.now(UTC),
                         crosswalks=DictCrosswalks({"vendor": {"987654321": "V-EXMED"}}))
    [po] = CxmlMapping().map(msg, ctx)
    assert isinstance(po, PurchaseOrder)
    return po


def test_each_vendor_gets_its_po_format_at_its_own_destination(po_api: Any, db: Database, tmp_path: Path) -> None:
    api, key = po_api
    x12 = _post(api, key, "ACMEMED", "PO-X12-1")
    cxml = _post(api, key, "987654321", "PO-CXML-1")
    assert x12.status_code == 201 and cxml.status_code == 201, (x12.text, cxml.text)
    assert (x12.json()["partner"], cxml.json()["partner"]) == ("acme", "exmed")
    with db.read() as conn:
        types = [r.event_type for r in conn.execute(select(events.c.event_type).order_by(events.c.seq))]
        payloads = [r.payload for r in conn.execute(select(events.c.payload))]
    assert types == ["purchase_order.order.recorded", "purchase_order.x12_850.created",
                     "purchase_order.order.recorded", "purchase_order.cxml_order_request.created"]
    # the shared secret is in no stored event (the feed, the database): only the delivered file has it
    assert not [p for p in payloads if SECRET in p]
    assert sum("{{bridge:secret}}" in p for p in payloads) == 1

    # both destinations subscribe to every purchase-order event; each event's route picks one
    acme_dir, exmed_dir = tmp_path / "acme", tmp_path / "exmed"
    relay = make_relay(db, {name: {"type": "folder", "directory": str(path), "subscribe": ["purchase_order.*"]}
                            for name, path in (("acme_out", acme_dir), ("exmed_out", exmed_dir))})
    relay.run_until_idle(timeout=30)
    (sent_850,) = [p for p in acme_dir.iterdir() if p.suffix == ".x12"]
    assert "BEG*00*SA*PO-X12-1**20261126~" in sent_850.read_text()
    (sent_cxml,) = [p for p in exmed_dir.iterdir() if p.suffix == ".xml"]
    assert not [p for p in acme_dir.iterdir() if p.suffix == ".xml"]
    assert not [p for p in exmed_dir.iterdir() if p.suffix == ".x12"]

    document = sent_cxml.read_bytes()
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE cXML SYSTEM')
    assert f"<SharedSecret>{SECRET}</SharedSecret>".encode() in document
    back = _parse_back(document)
    stored = PurchaseOrder.model_validate(cxml.json()["order"])
    assert back == stored.model_copy(update={"source_channel": "api"})
    assert (back.cost_center, back.lines[1].cost_center) == ("CC-4100", "CC-4200")

    for resp in (x12, cxml):
        status = api.get(f"/v1/purchase-orders/{resp.json()['id']}", headers=auth(key)).json()
        assert status["status"] == "sent"
        assert [t["status"] for t in status["timeline"]] == ["created", "sent"]
    destinations = {api.get(f"/v1/purchase-orders/{r.json()['id']}", headers=auth(key)).json()["timeline"][1]
                    ["detail"]["destination"] for r in (x12, cxml)}
    assert destinations == {"acme_out", "exmed_out"}


def test_a_cxml_vendor_without_its_secret_in_the_environment_is_refused_and_nothing_is_written(
        po_api: Any, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    api, key = po_api
    monkeypatch.delenv(SECRET_ENV)
    body = assert_problem(_post(api, key, "987654321", "PO-CXML-2"), 503)
    assert SECRET_ENV in body["detail"] and SECRET not in str(body)
    with db.read() as conn:
        assert conn.execute(select(events.c.id)).first() is None


def test_a_cxml_profile_needs_its_cxml_block() -> None:
    with pytest.raises(ValueError, match="po_format cxml needs a cxml block"):
        Settings.model_validate({"partners": {"x": {**PARTNERS["exmed"], "cxml": None}}})


def test_the_secret_is_filled_in_at_delivery_and_a_missing_one_is_retried_by_name(
        po_api: Any, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, key = po_api
    assert _post(api, key, "987654321", "PO-CXML-2").status_code == 201
    # the variable disappears between the order and its delivery (a restart without it)
    monkeypatch.delenv(SECRET_ENV)
    out = tmp_path / "exmed"
    relay = make_relay(db, {"exmed_out": {"type": "folder", "directory": str(out), "subscribe": []}})
    relay.fanout()
    relay.work_once(relay.open_instances())
    (row,) = delivery_rows(db, "exmed_out")
    assert (row.status, row.attempts) == ("pending", 1)
    assert SECRET_ENV in row.last_error and not list(out.glob("*.xml"))

    tricky = "a&b<c>"
    monkeypatch.setenv(SECRET_ENV, tricky)
    relay.run_until_idle(timeout=30)
    (sent,) = out.glob("*.xml")
    assert b"<SharedSecret>a&amp;b&lt;c&gt;</SharedSecret>" in sent.read_bytes()
    _parse_back(sent.read_bytes())  # still well-formed XML
