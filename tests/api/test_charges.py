"""``/v1/charges``: a charge becomes a Charge record and a DFT^P03 the relay delivers; PHI stays masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bridge.api.keys import create_client
from bridge.db import Database
from mappings.crosswalks import upsert_entries
from parsers.hl7 import HL7Parser
from tests.api.conftest import assert_problem, auth
from tests.outbox.helpers import make_relay

CHARGE: dict[str, Any] = {
    "transaction_id": "CHG-000123", "charge_code": "270-SUT-0001", "charge_description": "SUTURE 3-0",
    "quantity": "2", "amount": "31.50", "department": "ICU", "item": "100234", "visit_number": "V0000001",
    "mrn": "MRN00001", "transaction_date": "2026-11-26T08:30:00Z",
}


def test_charge_goes_out_as_dft_p03(api: TestClient, db: Database, keys: dict[str, str], tmp_path: Path) -> None:
    with db.write() as conn:
        upsert_entries(conn, "item", [{"source_code": "100234", "target_code": "ERP-SUT-0001"}])
        upsert_entries(conn, "department", [{"source_code": "ICU", "target_code": "CC-4100"}])
    h = {**auth(keys["charges"]), "Idempotency-Key": "chg-1", "X-Correlation-ID": "billing-run-7"}
    resp = api.post("/v1/charges", json=CHARGE, headers=h)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "queued" and len(body["control_id"]) == 20
    assert body["charge"]["cost_center"] == "CC-4100" and body["charge"]["item"] == "ERP-SUT-0001"
    assert body["charge"]["mrn"] == "***" and body["correlation_id"] == "billing-run-7"
    again = api.post("/v1/charges", json=CHARGE, headers=h)
    assert again.json() == body and again.headers["idempotent-replayed"] == "true"
    assert_problem(api.post("/v1/charges", json=CHARGE, headers=auth(keys["charges"])), 409)

    # the DFT^P03 in the event feed is masked without phi:read, whole with it
    feed = api.get("/v1/events?type=billing.charge.dft_p03.created", headers=auth(keys["reader"])).json()
    assert feed["items"][0]["payload"]["data"]["content"] == "***"
    feed = api.get("/v1/events?type=billing.charge.dft_p03.created", headers=auth(keys["phi"])).json()
    assert "MRN00001" in feed["items"][0]["payload"]["data"]["content"]

    out = tmp_path / "billing"
    make_relay(db, {"billing": {"type": "folder", "subscribe": ["billing.charge.dft_p03.*"],
                                "directory": str(out)}}).run_until_idle(timeout=20)
    (f,) = list(out.iterdir())
    with f.open("rb") as stream:
        (msg,) = list(HL7Parser().parse(stream, name=f.name))
    text = f.read_bytes().decode()
    assert text.startswith("MSH|^~\\&|BRIDGE|") and "|DFT^P03^DFT_P03|" + body["control_id"] + "|" in text
    assert "\rFT1|1|CHG-000123||" in text and "MRN00001^^^^MR" in text
    assert msg.type.startswith("DFT")
    _, reader = create_client(db, "phi-reader", ["records:read", "phi:read"])
    status = api.get(f"/v1/charges/{body['id']}", headers=auth(reader)).json()
    assert status["status"] == "delivered" and status["destinations"][0]["destination"] == "billing"
    assert status["charge"]["mrn"] == "MRN00001"


def test_charge_validation(api: TestClient, keys: dict[str, str]) -> None:
    body = assert_problem(api.post("/v1/charges", json={**CHARGE, "department": "NOWHERE"},
                                   headers=auth(keys["charges"])), 422)
    assert {e["name"] for e in body["errors"]} == {"department", "item"}
    assert_problem(api.post("/v1/charges", json={**CHARGE, "quantity": "-1"}, headers=auth(keys["charges"])), 422)
    assert_problem(api.post("/v1/charges", json=CHARGE, headers=auth(keys["reader"])), 403)
    assert_problem(api.get("/v1/charges/5", headers=auth(keys["reader"])), 404)
