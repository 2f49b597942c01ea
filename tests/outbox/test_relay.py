"""Relay storage behaviour on SQLite and PostgreSQL: fan-out, poison events, replay,
pause/resume, retention, status; the folder destination's atomic, jailed writes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from sqlalchemy import func, insert, select

from bridge.db import Database, utcnow
from bridge.db.tables import deliveries, delivery_attempts, events
from outbox.relay import destination_status, pause, replay, resume, subscription_matcher
from outbox.writer import new_event_id
from tests.outbox.conftest import Receiver, Reply, add_events
from tests.outbox.helpers import attempt_rows, delivery_rows, make_relay


def _folder(path: Path, subscribe: list[str] | None = None) -> dict[str, object]:
    return {"type": "folder", "subscribe": subscribe or ["*"], "directory": str(path)}


def test_subscription_wildcards() -> None:
    m = subscription_matcher(["inventory.*", "*.ack.sent"])
    assert m.match("inventory.movement.recorded")
    assert m.match("purchase_order.ack.sent")
    assert not m.match("purchase_order.created")
    assert not subscription_matcher([]).match("anything")


def test_fanout_by_subscription_with_ordering_key(db: Database, tmp_path: Path) -> None:
    add_events(db, [("inventory.movement.recorded", "M1", {}), ("item.recorded", "I1", {}),
                    ("inventory.movement.updated", "M1", {})])
    relay = make_relay(db, {"inv": _folder(tmp_path / "a", ["inventory.*"]), "all": _folder(tmp_path / "b")})
    assert relay.fanout() == 5
    assert relay.fanout() == 0  # the cursor moved: nothing twice
    inv = delivery_rows(db, "inv")
    assert [r.event_type for r in inv] == ["inventory.movement.recorded", "inventory.movement.updated"]
    assert {r.ordering_key for r in inv} == {"test:M1"}
    assert len(delivery_rows(db, "all")) == 3
    add_events(db, [("inventory.movement.recorded", "M2", {})])
    assert relay.fanout() == 2


def test_order_per_key_heads_then_runs(db: Database, tmp_path: Path) -> None:
    add_events(db, [("x.recorded", k, {}) for _ in range(3) for k in ("A", "B")])
    heads_only = make_relay(db, {"f": _folder(tmp_path)}, run_length=1)
    heads_only.fanout()
    first = heads_only.claim()
    assert sorted(c.event.aggregate_id for c in first) == ["A", "B"]  # one per key, keys in parallel
    assert heads_only.claim() == []  # the heads are leased, the rest wait behind them
    heads_only.deliver(first, heads_only.open_instances())
    runs = make_relay(db, {"f": _folder(tmp_path)}, run_length=20)
    batch = runs.claim()
    # the holder of a key's head takes its followers too, in event order
    assert [c.event.aggregate_id for c in batch] == ["A", "B", "A", "B"]
    assert [c.event.seq for c in batch] == sorted(c.event.seq for c in batch)
    assert heads_only.claim() == []


def test_poison_event_is_dead_lettered_and_the_rest_flow(db: Database, receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply())
    good = add_events(db, [("po.created", "P1", {})])
    with db.write() as conn:
        db.lock_events(conn)
        conn.execute(insert(events).values(id=new_event_id(), event_type="po.updated", aggregate_type="test",
                                           aggregate_id="P1", payload="{not json", created_at=utcnow()))
    good += add_events(db, [("po.updated", "P1", {}), ("po.created", "P2", {})])
    relay = make_relay(db, {"erp": {"type": "http", "url": url}})
    relay.run_until_idle()
    rows = delivery_rows(db, "erp")
    assert [r.status for r in rows] == ["delivered", "dead", "delivered", "delivered"]
    assert "not valid JSON" in rows[1].last_error and rows[1].attempts == 1
    assert sorted(r.event_id for r in receiver.accepted[path]) == sorted(good)


def test_replay_dead_and_delivered_by_filter(db: Database, receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply(400) if n < 2 else Reply())
    ids = add_events(db, [("po.created", "P1", {}), ("po.shipped", "P2", {}), ("po.created", "P3", {})])
    # one request at a time, so the first two requests (refused) are P1's and P2's
    relay = make_relay(db, {"erp": {"type": "http", "url": url, "concurrency": 1}})
    relay.run_until_idle()
    assert [r.status for r in delivery_rows(db, "erp")] == ["dead", "dead", "delivered"]
    assert replay(db, "erp", event_type="po.nothing") == 0
    assert replay(db, "erp", event_type="po.cre*") == 1
    assert replay(db, "erp", until=utcnow() - timedelta(days=1)) == 0
    assert replay(db, "erp", since=utcnow() - timedelta(days=1), key="P2") == 1
    relay.run_until_idle()
    assert [r.status for r in delivery_rows(db, "erp")] == ["delivered"] * 3
    assert replay(db, "erp", status="delivered", key="test:P3") == 1
    relay.run_until_idle()
    accepted = [r.event_id for r in receiver.accepted[path]]
    assert sorted(accepted) == sorted([*ids, ids[2]])
    assert [r.attempts for r in delivery_rows(db, "erp")] == [1, 1, 1]  # the budget restarts on replay


def test_replay_key_matches_literally(db: Database, receiver: Receiver) -> None:
    # LIKE wildcards and the escape character in a key are plain characters: P\\1 is not P1
    url, _ = receiver.route(lambda n: Reply(400))
    add_events(db, [("po.created", "P1", {}), ("po.created", "P\\1", {}), ("po.created", "P_1", {})])
    make_relay(db, {"erp": {"type": "http", "url": url}}).run_until_idle()
    assert [r.status for r in delivery_rows(db, "erp")] == ["dead"] * 3
    assert replay(db, "erp", key="P\\1") == 1
    assert [r.status for r in delivery_rows(db, "erp")] == ["dead", "pending", "dead"]
    assert replay(db, "erp", key="P_1") == 1
    assert [r.status for r in delivery_rows(db, "erp")] == ["dead", "pending", "pending"]


def test_pause_keeps_backlog_and_resume_drains(db: Database, tmp_path: Path) -> None:
    add_events(db, [("x.recorded", "A", {}), ("x.recorded", "B", {})])
    relay = make_relay(db, {"f": _folder(tmp_path / "out")})
    pause(db, "f", "ERP maintenance", known=["f"])
    relay.fanout()
    assert relay.work_once(relay.open_instances()) == 0
    [st] = destination_status(db, ["f"])
    assert st["paused"] and st["paused_reason"] == "ERP maintenance" and st["backlog"] == 2
    assert st["oldest_pending_seconds"] is not None
    resume(db, "f", known=["f"])
    relay.run_until_idle()
    [st] = destination_status(db, ["f"])
    assert not st["paused"] and st["backlog"] == 0 and st["delivered"] == 2 and st["attempts"] == 2
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_prune_removes_old_delivered_only(db: Database, receiver: Receiver) -> None:
    url, _ = receiver.route(lambda n: Reply(400) if n == 0 else Reply())
    add_events(db, [("x.recorded", "A", {}), ("x.recorded", "B", {})])
    relay = make_relay(db, {"erp": {"type": "http", "url": url}}, retention_days=7)
    relay.run_until_idle()
    assert relay.prune() == 0
    assert relay.prune(now=utcnow() + timedelta(days=8)) == 1
    [left] = delivery_rows(db, "erp")
    assert left.status == "dead" and len(attempt_rows(db, left.id)) == 1
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(delivery_attempts)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 1


def test_folder_writes_files_atomically_and_refuses_traversal(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "acks"
    ids = add_events(db, [
        ("hl7.ack.sent", "M1", {"filename": "ACK_M1.hl7", "content": "MSH|^~\\&|BRIDGE\rMSA|AA|M1\r"}),
        ("hl7.ack.sent", "M2", {"filename": "../escape.hl7", "content": "x"}),
        ("hl7.ack.sent", "M3", {"filename": "/etc/passwd", "content": "x"}),
        ("item.recorded", "I1", {"code": "X1"}),
    ])
    relay = make_relay(db, {"acks": _folder(out)})
    relay.run_until_idle()
    rows = delivery_rows(db, "acks")
    assert [r.status for r in rows] == ["delivered", "dead", "dead", "delivered"]
    assert "path traversal refused" in rows[1].last_error
    assert sorted(p.name for p in out.iterdir()) == sorted(["ACK_M1.hl7", f"{ids[3]}.json"])
    assert (out / "ACK_M1.hl7").read_bytes() == b"MSH|^~\\&|BRIDGE\rMSA|AA|M1\r"
    assert orjson.loads((out / f"{ids[3]}.json").read_bytes())["data"] == {"code": "X1"}
    assert not (tmp_path / "escape.hl7").exists()
