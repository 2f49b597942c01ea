"""``/metrics``: needs ops:read; pipeline state derived from the database; API requests by route template."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from bridge.db import Database, utcnow
from bridge.db.tables import destination_state
from tests.api.conftest import CHANNEL, assert_problem, auth, csv_rows


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_need_ops_read(api: TestClient, keys: dict[str, str]) -> None:
    assert_problem(api.get("/metrics"), 401)
    assert_problem(api.get("/metrics", headers=auth(keys["records_only"])), 403)
    resp = api.get("/metrics", headers={"Authorization": f"Bearer {keys['ops_star']}"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")


def test_metrics_count_files_records_failures_latency_and_backlog(api: TestClient, db: Database,
                                                                  keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(3) + b"2026-11-26 09:00:00,999999,1,EA,ICU,issue,\n")  # row 4 fails: unknown item
    with db.write() as conn:
        conn.execute(insert(destination_state), {"name": "erp", "fanout_cursor": 1, "updated_at": utcnow()})
    api.get("/v1/records/inventory-movements/1", headers=auth(keys["reader"]))
    api.get("/v1/records/inventory-movements/99999", headers=auth(keys["reader"]))
    s = _samples(api.get("/metrics", headers=auth(keys["reader"])).text)
    ch = ("channel", CHANNEL)
    assert s[("bridge_inbound_files", (ch, ("status", "partial")))] == 1
    assert s[("bridge_inbound_messages", (ch,))] == 4
    assert s[("bridge_records", (ch, ("outcome", "created"), ("type", "inventory_movement")))] == 3
    assert s[("bridge_failures", (("category", "master_data"), ch, ("status", "open")))] == 1
    assert s[("bridge_drop_to_commit_seconds_count", (ch,))] == 1
    assert s[("bridge_drop_to_commit_seconds_bucket", (ch, ("le", "+Inf")))] == 1
    assert s[("bridge_drop_to_commit_seconds_sum", (ch,))] >= 0
    # 3 record events; the destination's fan-out cursor is past the first
    assert s[("bridge_outbox_backlog", (("destination", "erp"),))] == 2
    assert s[("bridge_outbox_oldest_age_seconds", (("destination", "erp"),))] >= 0
    route = ("route", "/v1/records/{type}/{id}")
    assert s[("bridge_api_requests_total", (("method", "GET"), route, ("status", "200")))] == 1
    assert s[("bridge_api_requests_total", (("method", "GET"), route, ("status", "404")))] == 1
    assert s[("bridge_api_request_duration_seconds_count", (("method", "GET"), route))] == 2
