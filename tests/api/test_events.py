"""GET /v1/events: the feed by seq cursor, type filter, PHI masking, and no skip on out-of-order commits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, text

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database, utcnow
from bridge.db.tables import audit_log
from bridge.settings import Settings
from mappings.canonical import InventoryMovement
from outbox.writer import Origin, write_records
from tests.api.conftest import assert_problem, auth, csv_rows

URL = "/v1/events"


def test_feed_pages_by_cursor_and_keeps_polling(api: TestClient, keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(5))
    key = auth(keys["reader"])
    first = api.get(URL, params={"limit": 2}, headers=key).json()
    assert [e["type"] for e in first["items"]] == ["inventory.movement.recorded"] * 2
    assert first["next_cursor"] == first["items"][-1]["seq"]
    rest = api.get(URL, params={"after": first["next_cursor"]}, headers=key).json()
    assert len(rest["items"]) == 3
    seqs = [e["seq"] for e in first["items"] + rest["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    # nothing new: the same cursor comes back
    idle = api.get(URL, params={"after": rest["next_cursor"]}, headers=key).json()
    assert idle == {"items": [], "next_cursor": rest["next_cursor"]}
    ingest(csv_rows(2, start=50), "later.csv")
    later = api.get(URL, params={"after": idle["next_cursor"]}, headers=key).json()
    assert len(later["items"]) == 2 and later["items"][0]["seq"] > seqs[-1]
    event = later["items"][0]
    assert event["payload"]["id"] == event["id"]
    assert event["payload"]["record_type"] == "inventory_movement"
    assert event["record_id"] == event["payload"]["record_id"]


def test_type_filter(api: TestClient, keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(3))
    key = auth(keys["reader"])
    assert len(api.get(URL, params={"type": "inventory.movement.recorded"}, headers=key).json()["items"]) == 3
    assert len(api.get(URL, params={"type": "inventory.*"}, headers=key).json()["items"]) == 3
    nothing = api.get(URL, params={"type": "item.*", "after": 1}, headers=key).json()
    assert nothing == {"items": [], "next_cursor": 1}
    body = assert_problem(api.get(URL, params={"type": "inv*.*"}, headers=key), 422)
    assert body["errors"][0]["name"] == "type"
    body = assert_problem(api.get(URL, params={"after": "-1"}, headers=key), 422)
    assert body["errors"][0]["name"] == "after"
    # past the largest seq PostgreSQL can hold (BIGINT): the client's mistake, not a storage failure
    body = assert_problem(api.get(URL, params={"after": str(2**63)}, headers=key), 422)
    assert body["errors"][0]["name"] == "after"


def test_phi_masked_in_event_payloads(api: TestClient, keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(2))
    masked = api.get(URL, headers=auth(keys["reader"]))
    assert {e["payload"]["record"]["encounter"] for e in masked.json()["items"]} == {"***"}
    assert "V0000001" not in masked.text
    clear = api.get(URL, headers=auth(keys["phi"])).json()["items"]
    assert [e["payload"]["record"]["encounter"] for e in clear] == ["V0000000", "V0000001"]


def _movement(n: int) -> InventoryMovement:
    return InventoryMovement(
        movement_id=f"test:{n}", movement_type="issue", occurred_at=datetime(2026, 11, 26, 8, 0, n, tzinfo=UTC),
        item="ERP-SUT-0001", source_item="100234", quantity=Decimal(1), quantity_delta=Decimal(-1), unit="EA",
        department="ICU", cost_center="CC-4100", source_channel="test",
    )


def _wait_for_lock_waiter(db: Database, pid: int) -> None:
    """Until backend ``pid`` waits on an ungranted advisory lock (the events lock)."""
    deadline = 600  # polls; a bound so a broken lock fails the test instead of hanging it
    with db.engine.connect() as conn:
        for _ in range(deadline):
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = :pid"),
                {"pid": pid}).scalar_one()
            conn.commit()
            if waiting:
                return
            threading.Event().wait(0.05)
    raise AssertionError("the second writer never waited on the events lock")


@pytest.mark.postgres
def test_feed_misses_nothing_when_commits_land_out_of_order(pg_db: Database, tmp_path) -> None:
    """T2 begins first, T1 takes the events lock and inserts; T2 must wait, so seq order = commit order."""
    db = pg_db
    key = create_client(db, "feed", ["events:read"])[1]
    app = create_app(Settings.model_validate({"data_dir": str(tmp_path / "var")}), db)
    t2_begun, t1_inserted, t1_commit, t2_inserted, t2_commit = (threading.Event() for _ in range(5))
    errors: list[BaseException] = []
    t2_pid: list[int] = []

    def t2() -> None:
        try:
            with db.write() as conn:
                # T2's transaction starts before T1's (any write will do)
                conn.execute(insert(audit_log), {"at": utcnow(), "actor": "t2", "action": "test"})
                t2_pid.append(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                t2_begun.set()
                t1_inserted.wait(30)
                # write_records takes db.lock_events right before inserting events: blocks until T1 commits
                write_records(db, conn, [(_movement(2), Origin(channel="test"))])
                t2_inserted.set()
                t2_commit.wait(30)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)
            t2_inserted.set()

    def t1() -> None:
        try:
            with db.write() as conn:
                t2_begun.wait(30)
                write_records(db, conn, [(_movement(1), Origin(channel="test"))])
                t1_inserted.set()
                t1_commit.wait(30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            t1_inserted.set()

    threads = [threading.Thread(target=t2), threading.Thread(target=t1)]
    for t in threads:
        t.start()
    try:
        with TestClient(app) as api:
            def feed(after: int) -> dict:
                resp = api.get(URL, params={"after": after}, headers=auth(key))
                assert resp.status_code == 200
                return resp.json()

            t1_inserted.wait(30)
            _wait_for_lock_waiter(db, t2_pid[0])  # T2 is now blocked on the events lock, T1 holds it
            assert feed(0) == {"items": [], "next_cursor": 0}
            t1_commit.set()
            t2_inserted.wait(30)
            # T1 is committed, T2 has inserted its event but not committed: the reader moves past T1
            page = feed(0)
            assert [e["aggregate_id"] for e in page["items"]] == ["ERP-SUT-0001@CC-4100"]
            cursor = page["next_cursor"]
            t2_commit.set()
            for t in threads:
                t.join(30)
            # T2 committed last and its event sits after the cursor: nothing skipped
            rest = feed(cursor)
            assert len(rest["items"]) == 1 and rest["items"][0]["seq"] > cursor
            assert rest["items"][0]["payload"]["natural_key"] == "test:2"
            assert page["items"][0]["payload"]["natural_key"] == "test:1"
    finally:
        for ev in (t1_inserted, t1_commit, t2_begun, t2_inserted, t2_commit):
            ev.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
