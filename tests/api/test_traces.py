"""``/v1/traces/{id}``: from an inbound file, correlation id, record or event to its deliveries."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import events, inbound_files
from tests.api.conftest import assert_problem, auth, csv_rows
from tests.outbox.helpers import make_relay


def test_trace_of_a_file_shows_every_hop_with_deliveries(api: TestClient, db: Database, keys: dict[str, str],
                                                         ingest, tmp_path: Path) -> None:
    ingest(csv_rows(2) + b"2026-11-26 09:00:00,999999,1,EA,ICU,issue,\n")  # row 3 fails: unknown item
    relay = make_relay(db, {"erp": {"type": "folder", "subscribe": ["*"], "directory": str(tmp_path / "out")}})
    relay.run_until_idle(timeout=20)
    with db.read() as conn:
        corr = conn.execute(select(inbound_files.c.correlation_id)).scalar_one()
        first_event = conn.execute(select(events).order_by(events.c.seq)).first()
    h = auth(keys["reader"])
    body = api.get("/v1/traces/inbound:1", headers=h).json()
    assert body["resolved_as"] == "inbound" and body["correlation_ids"] == [corr]
    kinds = [hop["kind"] for hop in body["hops"]]
    assert kinds[0] == "landed" and kinds.count("processed") == 1
    assert kinds.count("record") == 2 and kinds.count("event") == 2 and kinds.count("delivery") == 2
    assert kinds.count("failed") == 1
    failed = next(hop for hop in body["hops"] if hop["kind"] == "failed")
    assert failed["detail"]["category"] == "master_data" and failed["detail"]["message_index"] == 2
    delivery = next(hop for hop in body["hops"] if hop["kind"] == "delivery")
    assert delivery["outcome"] == "delivered" and delivery["detail"]["destination"] == "erp"
    assert delivery["attempts"][0]["outcome"] == "delivered"
    assert body["drop_to_commit_seconds"] >= 0 and body["commit_to_delivered_seconds"] >= 0
    elapsed = [hop["elapsed_seconds"] for hop in body["hops"]]
    assert elapsed == sorted(elapsed) and elapsed[0] == 0
    # the same flow from its other ends
    for id_ in (corr, f"correlation:{corr}", "1", "record:1", first_event.id, f"event:{first_event.seq}"):
        other = api.get(f"/v1/traces/{id_}", headers=h)
        assert other.status_code == 200, (id_, other.text)
        assert any(hop["kind"] == "landed" for hop in other.json()["hops"]), id_
        assert any(hop["kind"] == "delivery" for hop in other.json()["hops"]), id_
    assert api.get("/v1/traces/record:1", headers=h).json()["resolved_as"] == "record"
    assert api.get(f"/v1/traces/{first_event.id}", headers=h).json()["resolved_as"] == "event"
    # the same deliveries feed the commit -> delivered histogram
    metrics = api.get("/metrics", headers=h).text
    assert 'bridge_commit_to_delivered_seconds_count{destination="erp"} 2.0' in metrics
    assert 'bridge_deliveries{destination="erp",status="delivered"} 2.0' in metrics


def test_unknown_trace_is_a_404_problem(api: TestClient, keys: dict[str, str]) -> None:
    h = auth(keys["reader"])
    for id_ in ("nothing-here", "42", "record:abc", "event:0190f3b2-7c1e-7a00-8000-0123456789ab", "inbound:9"):
        body = assert_problem(api.get(f"/v1/traces/{id_}", headers=h), 404)
        assert "inbound:" in body["detail"]
    assert_problem(api.get("/v1/traces/1", headers=auth(keys["records_only"])), 403)
