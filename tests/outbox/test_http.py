"""The relay through a real HTTP receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta

import pytest

from bridge.db import Database
from tests.outbox.conftest import Receiver, Reply, add_events
from tests.outbox.helpers import attempt_rows, delivery_rows, make_relay


def _hook(url: str, **extra: object) -> dict[str, object]:
    return {"type": "http", "subscribe": ["*"], "url": url, "timeout_seconds": 5, **extra}


def test_webhook_down_then_back_delivers_all_in_order_once(db: Database, receiver: Receiver,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", "s3cret")
    # down: connections dropped, then 503s; then back
    url, path = receiver.route(lambda n: Reply(drop=True) if n < 4 else Reply(503) if n < 8 else Reply(200))
    specs = [("po.line.recorded", f"K{k}", {"n": i}) for i in range(5) for k in range(3)]
    ids = add_events(db, specs)
    relay = make_relay(db, {"erp": _hook(url, secret_env="TEST_HOOK_SECRET")})
    relay.run_until_idle()

    accepted = receiver.accepted[path]
    assert sorted(r.event_id for r in accepted) == sorted(ids)  # all, none twice
    for k in range(3):
        expected = [i for i, (_, key, _) in zip(ids, specs, strict=True) if key == f"K{k}"]
        assert [r.event_id for r in accepted if r.key == f"test:K{k}"] == expected
    rows = delivery_rows(db, "erp")
    assert {r.status for r in rows} == {"delivered"}
    assert sum(r.attempts for r in rows) == len(ids) + 8
    # signature: HMAC-SHA256 over "<timestamp>.<body>"
    r0 = accepted[0]
    mac = hmac.new(b"s3cret", r0.headers["X-Bridge-Timestamp"].encode() + b"." + r0.body, hashlib.sha256)
    assert r0.headers["X-Bridge-Signature"] == "sha256=" + mac.hexdigest()


def test_429_retry_after_is_honoured(db: Database, receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply(429, headers={"Retry-After": "1"}) if n == 0 else Reply())
    [eid] = add_events(db, [("po.created", "P1", {})])
    relay = make_relay(db, {"erp": _hook(url)})
    relay.fanout()
    instances = relay.open_instances()
    try:
        assert relay.work_once(instances) == 1
        [row] = delivery_rows(db, "erp")
        assert row.status == "pending" and row.last_status_code == 429
        assert row.next_attempt_at - row.updated_at >= timedelta(seconds=1)
        assert relay.work_once(instances) == 0  # not due yet
    finally:
        instances["erp"].close()
    relay.run_until_idle()
    assert [r.event_id for r in receiver.accepted[path]] == [eid]


def test_400_dead_letters_with_response_stored_and_key_moves_on(db: Database, receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply(400, body=b'{"error":"unknown vendor"}') if n == 0 else Reply())
    ids = add_events(db, [("po.created", "P1", {}), ("po.updated", "P1", {})])
    relay = make_relay(db, {"erp": _hook(url)})
    relay.run_until_idle()
    first, second = delivery_rows(db, "erp")
    assert first.status == "dead" and first.attempts == 1 and first.last_status_code == 400
    assert "HTTP 400" in first.last_error
    [att] = attempt_rows(db, first.id)
    assert att.outcome == "dead" and att.response == '{"error":"unknown vendor"}'
    assert second.status == "delivered"
    assert [r.event_id for r in receiver.accepted[path]] == [ids[1]]


def test_slow_response_past_timeout_is_retried(db: Database, receiver: Receiver) -> None:
    release = threading.Event()
    url, path = receiver.route(lambda n: Reply(hold=release, hold_seconds=30) if n == 0 else Reply())
    [eid] = add_events(db, [("po.created", "P1", {})])
    relay = make_relay(db, {"erp": _hook(url, timeout_seconds=0.3)})
    try:
        relay.run_until_idle()
    finally:
        release.set()
    [row] = delivery_rows(db, "erp")
    assert row.status == "delivered" and row.attempts == 2
    first, second = attempt_rows(db, row.id)
    assert first.outcome == "retry" and "timeout" in first.error
    assert second.outcome == "delivered" and second.status_code == 200
    assert eid in [r.event_id for r in receiver.accepted[path]]


def test_503_until_max_attempts_dead_letters(db: Database, receiver: Receiver) -> None:
    url, _ = receiver.route(lambda n: Reply(503))
    add_events(db, [("po.created", "P1", {})])
    relay = make_relay(db, {"erp": _hook(url)}, max_attempts=3)
    relay.run_until_idle()
    [row] = delivery_rows(db, "erp")
    assert row.status == "dead" and row.attempts == 3
    assert "gave up after 3 attempts" in row.last_error
    assert [a.outcome for a in attempt_rows(db, row.id)] == ["retry", "retry", "dead"]
