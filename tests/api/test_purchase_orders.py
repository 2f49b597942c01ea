"""``/v1/purchase-orders``: a PO created through the API reaches a real SFTP server as an 850, and its
status follows the 855 that comes back; Idempotency-Key replays; crosswalk validation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.db.tables import events, records
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig, Settings
from mappings.base import EventDraft
from mappings.crosswalks import upsert_entries
from outbox.writer import Origin, write_events
from tests.api.conftest import assert_problem, auth
from tests.outbox.helpers import make_relay
from tests.sftp.conftest import SshServer, remote_dir, ssh_root, sshd, user_key  # noqa: F401

SAMPLES = Path(__file__).parents[1] / "samples" / "x12"

PARTNER = {"isa_id": "ACMEMED", "our_isa_id": "BRIDGEHOSP", "version": "00401", "vendor": "V-MED",
           "return_channel": "acme_sftp"}

PO: dict[str, Any] = {
    "po_number": "PO-2026-0042", "vendor": "ACMEMED", "order_date": "2026-11-26", "cost_center": "ICU",
    "lines": [{"item": "ITM-1001", "quantity": "10", "unit": "BX", "unit_price": "12.5"},
              {"item": "ITM-2002", "quantity": "4", "unit": "CS", "unit_price": "89", "cost_center": "CC-4200"},
              {"item": "ITM-3003", "quantity": "1", "unit": "EA", "unit_price": "240"}],
}


def seed_master_data(db: Database) -> None:
    """The vendor, items and departments :data:`PO` names (one inactive item, ``L9``)."""
    with db.write() as conn:
        upsert_entries(conn, "vendor", [{"source_code": "ACMEMED", "target_code": "V-MED"}])
        upsert_entries(conn, "item", [{"source_code": f"L{c}", "target_code": f"ITM-{c}"}
                                      for c in ("1001", "2002", "3003")] +
                       [{"source_code": "L9", "target_code": "ITM-OLD", "active": False}])
        upsert_entries(conn, "department", [{"source_code": "ICU", "target_code": "CC-4100"},
                                            {"source_code": "ED", "target_code": "CC-4200"}])


@pytest.fixture
def po_api(db: Database, tmp_path: Path) -> Any:
    seed_master_data(db)
    settings = Settings.model_validate({"data_dir": str(tmp_path / "var"), "partners": {"acme": PARTNER}})
    keys = {name: create_client(db, name, scopes)[1] for name, scopes in
            {"buyer": ["purchase-orders:write", "records:read"], "reader": ["records:read"],
             "other": ["purchase-orders:write"]}.items()}
    with TestClient(create_app(settings, db)) as api:
        yield api, keys


def _post(api: TestClient, key: str, body: dict[str, Any], idem: str, **headers: str) -> Any:
    return api.post("/v1/purchase-orders", json=body, headers={**auth(key), "Idempotency-Key": idem, **headers})


def test_po_goes_out_as_850_over_sftp_and_follows_the_855(po_api: Any, db: Database, tmp_path: Path,
                                                          sshd: SshServer, remote_dir: Path) -> None:  # noqa: F811
    api, keys = po_api
    resp = _post(api, keys["buyer"], PO, "order-42", **{"X-Correlation-ID": "erp-po-42"})
    assert resp.status_code == 201, resp.text
    po = resp.json()
    assert resp.headers["location"] == f"/v1/purchase-orders/{po['id']}"
    assert po["status"] == "created" and po["vendor"] == "V-MED" and po["partner"] == "acme"
    assert po["order"]["cost_center"] == "CC-4100" and po["order"]["total"] == "721.00"
    assert [ln["item"] for ln in po["order"]["lines"]] == ["ITM-1001", "ITM-2002", "ITM-3003"]
    assert po["correlation_id"] == "erp-po-42" and po["interchange_control"] == "000000001"

    # a retry with the same key and body: the same PO, nothing new written
    again = _post(api, keys["buyer"], {**PO, "lines": list(PO["lines"])}, "order-42")
    assert again.status_code == 201 and again.json() == po
    assert again.headers["idempotent-replayed"] == "true"
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar() == 1
        types = [r.event_type for r in conn.execute(select(events.c.event_type, events.c.correlation_id)
                                                    .order_by(events.c.seq))]
        assert types == ["purchase_order.order.recorded", "purchase_order.x12_850.created"]
        assert {r.correlation_id for r in conn.execute(select(events.c.correlation_id))} == {"erp-po-42"}
    # the same key with another body is a client bug; another key for the same PO number is a conflict
    body = assert_problem(_post(api, keys["buyer"], {**PO, "currency": "EUR"}, "order-42"), 422)
    assert body["type"] == "urn:bridge:problem:idempotency-key-reused"
    assert_problem(_post(api, keys["buyer"], PO, "order-42-b"), 409)
    # keys are per client
    assert_problem(_post(api, keys["other"], PO, "order-42"), 409)

    # the relay delivers the 850 to the vendor's real SFTP server
    relay = make_relay(db, {"acme_sftp": {
        "type": "sftp", "subscribe": ["purchase_order.x12_850.*"], "host": "127.0.0.1", "port": sshd.port,
        "username": "root", "key_file": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
        "directory": str(remote_dir), "keepalive": 0, "connect_timeout": 5}})
    relay.run_until_idle(timeout=30)
    (sent,) = list(remote_dir.iterdir())
    x12 = sent.read_text()
    assert x12.startswith("ISA*00*") and "*ACMEMED" in x12 and "BEG*00*SA*PO-2026-0042**20261126~" in x12
    assert "PO1*1*10*BX*12.5**BP*ITM-1001~" in x12 and "REF*DP*CC-4200~" in x12 and "CTT*3~" in x12
    h = auth(keys["reader"])
    status = api.get(f"/v1/purchase-orders/{po['id']}", headers=h).json()
    assert status["status"] == "sent"
    assert [t["status"] for t in status["timeline"]] == ["created", "sent"]
    assert status["timeline"][1]["detail"]["destination"] == "acme_sftp"

    # the vendor's 997 (the documented event contract) and 855 come back
    with db.write() as conn:
        write_events(db, conn, [(EventDraft("edi.functional_ack.received", "edi_interchange", "acme:000000001",
                                            {"partner": "acme", "interchange_control": "000000001", "kind": "997",
                                             "status": "A"}), Origin(channel="acme_in"))])
    archive = Archive(tmp_path / "archive")
    channel = ChannelConfig.model_validate({
        "source": {"type": "folder", "path": str(tmp_path / "drop")}, "parser": {"type": "x12"},
        "mapping": {"type": "x12_855", "acks": {"functional": False, "ta1": "never"}}})
    processor = Processor(db, archive, {"acme_in": build_channel("acme_in", channel)})
    landed = land(db, archive, channel="acme_in", src=io.BytesIO((SAMPLES / "855.x12").read_bytes()), name="855.x12")
    processor.process(landed.inbound_id)
    status = api.get(f"/v1/purchase-orders/{po['id']}", headers=h).json()
    assert status["status"] == "acknowledged", status
    assert [t["status"] for t in status["timeline"]] == ["created", "sent", "accepted", "acknowledged"]
    assert [(ln["line_number"], ln["status"]) for ln in status["lines"]] == [
        ("1", "IA"), ("2", "IA"), ("2", "IB"), ("3", "IR")]


def test_unknown_or_inactive_master_data_is_a_422_naming_each_field(po_api: Any) -> None:
    api, keys = po_api
    bad = {**PO, "vendor": "NOBODY", "lines": [{"item": "ITM-1001", "quantity": "1", "unit": "EA"},
                                               {"item": "L9", "quantity": "1", "unit": "EA",
                                                "cost_center": "NOWHERE"}]}
    body = assert_problem(_post(api, keys["buyer"], bad, "k1"), 422)
    assert body["type"] == "urn:bridge:problem:unknown-master-data"
    assert {e["name"] for e in body["errors"]} == {"vendor", "lines.1.item", "lines.1.cost_center"}
    # a vendor without a trading-partner profile cannot be sent an 850
    with api.app.state.db.write() as conn:
        upsert_entries(conn, "vendor", [{"source_code": "OTHER", "target_code": "V-OTHER"}])
    body = assert_problem(_post(api, keys["buyer"], {**PO, "vendor": "V-OTHER"}, "k2"), 422)
    assert body["type"] == "urn:bridge:problem:no-trading-partner"
    # the idempotency key is required; scopes are enforced
    assert_problem(api.post("/v1/purchase-orders", json=PO, headers=auth(keys["buyer"])), 422)
    assert_problem(_post(api, keys["reader"], PO, "k3"), 403)
    assert_problem(api.get("/v1/purchase-orders/999", headers=auth(keys["reader"])), 404)
