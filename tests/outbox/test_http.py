"""The relay through a real HTTP receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from bridge.db import Database
from outbox.destinations.base import OutboxEvent
from outbox.destinations.http import HttpDestination, HttpDestinationConfig
from tests.helpers import self_signed_cert
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


# -- the destination on its own ------------------------------------------------

def _event(seq: int, key: str, payload: str | None = None) -> OutboxEvent:
    eid = f"00000000-0000-7000-8000-{seq:012d}"
    doc = {"id": eid, "type": "po.updated", "aggregate_type": "test", "aggregate_id": key, "n": seq}
    return OutboxEvent(seq=seq, id=eid, type="po.updated", aggregate_type="test", aggregate_id=key,
                       created_at=datetime.now(UTC), payload=payload or orjson.dumps(doc).decode())


def _destination(url: str, **extra: object) -> HttpDestination:
    return HttpDestination("erp", HttpDestinationConfig.model_validate({"url": url, "timeout_seconds": 5, **extra}))


def _wait_for(cond, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_keys_are_posted_at_once_up_to_concurrency_each_in_order(receiver: Receiver) -> None:
    release = threading.Event()
    url, path = receiver.route(lambda n: Reply(hold=release, hold_seconds=10) if n < 3 else Reply())
    events = [_event(i, f"K{i % 4}") for i in range(12)]  # 4 keys x 3 events
    dest = _destination(url, concurrency=3)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(dest.deliver_many(events)))
    t.start()
    try:
        _wait_for(lambda: receiver.counts.get(path, 0) >= 3)
        time.sleep(0.2)
        assert receiver.counts[path] == 3  # three keys in flight, the fourth waits for a free slot
        assert sorted(r.key for r in receiver.requests[path]) == ["test:K0", "test:K1", "test:K2"]
    finally:
        release.set()
        t.join(10)
        dest.close()
    assert all(o is not None and o.delivered and o.status_code == 200 for o in got)
    for k in range(4):
        sent = [r.event_id for r in receiver.requests[path] if r.key == f"test:K{k}"]
        assert sent == [e.id for e in events if e.aggregate_id == f"K{k}"]


def test_nothing_more_of_a_key_after_a_retryable_failure(receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply(503, headers={"Retry-After": "7"}) if n == 0 else Reply())
    events = [_event(1, "A"), _event(2, "B"), _event(3, "A"), _event(4, "B")]
    dest = _destination(url, concurrency=1)  # one request at a time, in event order
    try:
        a1, b1, a2, b2 = dest.deliver_many(events)
    finally:
        dest.close()
    assert a1 is not None and not a1.delivered and not a1.permanent
    assert a1.status_code == 503 and a1.retry_after == 7.0 and a1.error == "erp: HTTP 503"
    assert a2 is None  # not attempted: A's order holds across batches
    assert b1 is not None and b1.delivered and b2 is not None and b2.delivered
    assert [r.event_id for r in receiver.requests[path]] == [events[0].id, events[1].id, events[3].id]


def test_deliver_many_from_several_threads_on_one_instance(receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply())
    dest = _destination(url, concurrency=4)
    batches = [[_event(t * 100 + i, f"T{t}K{i % 5}") for i in range(20)] for t in range(3)]
    outcomes: list[list[object]] = [[] for _ in batches]
    threads = [threading.Thread(target=lambda t=t: outcomes[t].extend(dest.deliver_many(batches[t])))
               for t in range(len(batches))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        dest.close()
    assert all(o is not None and o.delivered for out in outcomes for o in out)
    assert sorted(r.event_id for r in receiver.accepted[path]) == sorted(e.id for b in batches for e in b)
    for batch in batches:
        for key in {e.aggregate_id for e in batch}:
            sent = [r.event_id for r in receiver.accepted[path] if r.key == f"test:{key}"]
            assert sent == [e.id for e in batch if e.aggregate_id == key]


def test_headers_poison_and_response_text(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", "s3cret")
    refusal = "é" * 3000
    url, path = receiver.route(lambda n: Reply(200) if n == 0 else Reply(
        422, body=refusal.encode("latin-1"), headers={"Content-Type": "text/plain; charset=latin-1"}))
    dest = _destination(url, secret_env="TEST_HOOK_SECRET",
                        headers={"X-Api-Version": "2", "Idempotency-Key": "not-the-event-id"})
    try:
        ok, poison, refused = dest.deliver_many([_event(1, "A"), _event(2, "A", payload="[1, 2]"), _event(3, "A")])
    finally:
        dest.close()
    sent = receiver.requests[path][0]
    assert sent.headers["X-Api-Version"] == "2"  # static headers go along, ours are not overridden
    assert sent.headers["Idempotency-Key"] == _event(1, "A").id
    assert sent.headers["X-Bridge-Event-Type"] == "po.updated"
    assert sent.headers["Content-Type"] == "application/json" and sent.body == _event(1, "A").payload.encode()
    mac = hmac.new(b"s3cret", sent.headers["X-Bridge-Timestamp"].encode() + b"." + sent.body, hashlib.sha256)
    assert sent.headers["X-Bridge-Signature"] == "sha256=" + mac.hexdigest()
    assert ok is not None and ok.delivered and ok.response == "ok"
    assert poison is not None and poison.permanent and "not a JSON object" in (poison.error or "")
    assert refused is not None and refused.permanent and refused.status_code == 422
    assert refused.response == refusal[:2000]  # decoded by its charset, cut to 2,000 characters
    assert len(receiver.requests[path]) == 2  # the poison event was never sent


def test_header_values_cannot_forge_headers() -> None:
    with pytest.raises(ValidationError, match="line breaks"):
        HttpDestinationConfig.model_validate({"url": "http://127.0.0.1/x", "headers": {"X-A": "1\r\nX-Evil: 1"}})
    with pytest.raises(ValidationError, match="line breaks"):
        HttpDestinationConfig.model_validate({"url": "http://127.0.0.1/x", "headers": {"X A": "1"}})


def test_retry_after_as_http_date_and_connection_refused(receiver: Receiver) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    url, _ = receiver.route(lambda n: Reply(429, headers={"Retry-After": when}))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    dest, down = _destination(url), _destination(closed)
    try:
        [limited] = dest.deliver_many([_event(1, "A")])
        [refused] = down.deliver_many([_event(2, "A")])
    finally:
        dest.close()
        down.close()
    assert limited is not None and not limited.permanent and limited.retry_after is not None
    assert 110 <= limited.retry_after <= 121
    assert refused is not None and not refused.delivered and not refused.permanent
    assert "request failed" in (refused.error or "")


def test_tls_is_verified_unless_turned_off(tmp_path: Path) -> None:
    tls = Receiver()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*self_signed_cert(tmp_path))
    tls.server.socket = ctx.wrap_socket(tls.server.socket, server_side=True)
    tls.thread.start()
    url, path = tls.route(lambda n: Reply())
    url = url.replace("http://", "https://")
    strict, lax = _destination(url), _destination(url, verify_tls=False)
    try:
        [untrusted] = strict.deliver_many([_event(1, "A")])
        [ok] = lax.deliver_many([_event(2, "A")])
    finally:
        strict.close()
        lax.close()
        tls.server.shutdown()
        tls.server.server_close()
    assert untrusted is not None and not untrusted.delivered and not untrusted.permanent
    assert "request failed" in (untrusted.error or "")
    assert ok is not None and ok.delivered
    assert [r.event_id for r in tls.accepted[path]] == [_event(2, "A").id]  # the self-signed one got nothing


def test_connect_timeout_is_its_own() -> None:
    # a listener whose accept queue is full (backlog 0, never accepting): further SYNs go unanswered
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for s in fillers:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        dest = _destination(f"http://127.0.0.1:{port}/hook", timeout_seconds=30, connect_timeout_seconds=0.3)
        try:
            [o] = dest.deliver_many([_event(1, "A")])
        finally:
            dest.close()
            for s in fillers:
                s.close()
    assert o is not None and not o.delivered and not o.permanent
    assert "timeout" in (o.error or "") and o.duration_ms < 10_000  # the connect timeout, not the 30 s one
