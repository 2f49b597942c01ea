"""The ``head`` flag the claim walks (migration 0005): whatever order the fan-out, the record
of a key's head and a replay run in, the first pending delivery of every key stays claimable,
and a key's later deliveries never go before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from bridge.db import Database
from outbox.destinations.base import Outcome
from outbox.relay import Relay, replay
from tests.outbox.conftest import add_events
from tests.outbox.helpers import delivery_rows, make_relay
from tests.outbox.test_routes import _ack, _folder, _write

_DELIVERED = Outcome(delivered=True)


def _wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@contextmanager
def _pause_after(db: Database, statement_part: str, thread_name: str) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold the thread named ``thread_name`` right after it ran a statement containing
    ``statement_part``, inside its transaction: yields (reached, go)."""
    reached, go = threading.Event(), threading.Event()

    def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement_part in statement and threading.current_thread().name == thread_name and not reached.is_set():
            reached.set()
            assert go.wait(20)

    event.listen(db.engine, "after_cursor_execute", hook)
    try:
        yield reached, go
    finally:
        go.set()
        event.remove(db.engine, "after_cursor_execute", hook)


def _record_waits(db: Database) -> bool:
    """Whether a record's status UPDATE is waiting for a row lock."""
    with db.read() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND query LIKE '%SET status = ''delivered''%'")).scalar())


def _run(name: str, fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    return t


def _relay(db: Database, tmp_path: Path) -> Relay:
    return make_relay(db, {"erp": _folder(tmp_path / "erp", ["*"])})


def test_fanout_between_a_head_s_check_and_its_record(pg_db: Database, tmp_path: Path) -> None:
    """The fan-out saw the key's head pending while its record was about to commit: the record
    waits for the fan-out, so its promotion of the next head sees the new delivery."""
    relay = _relay(pg_db, tmp_path)
    first = add_events(pg_db, [("x.recorded", "K", {})])
    relay.fanout()
    claims = relay.claim()
    assert [c.event.id for c in claims] == first
    second = add_events(pg_db, [("x.recorded", "K", {})])
    with _pause_after(pg_db, "FOR SHARE SKIP LOCKED", "fanner") as (checked, go):
        fanner = _run("fanner", relay.fanout)
        assert checked.wait(20)
        recorder = _run("recorder", lambda: relay.record(claims, [_DELIVERED]))
        _wait_for(lambda: _record_waits(pg_db))  # the record's UPDATE waits for the fan-out
        go.set()
        fanner.join(20)
        recorder.join(20)
    assert [c.event.id for c in relay.claim()] == second


def test_fanout_while_a_head_s_record_is_uncommitted(pg_db: Database, tmp_path: Path) -> None:
    """A record holds the key's head (updated, not yet committed): the fan-out does not wait
    for it, and the key's new delivery is claimable once the record commits."""
    relay = _relay(pg_db, tmp_path)
    add_events(pg_db, [("x.recorded", "K", {})])
    relay.fanout()
    claims = relay.claim()
    second = add_events(pg_db, [("x.recorded", "K", {})])
    with _pause_after(pg_db, "SET status = 'delivered'", "recorder") as (updated, go):
        recorder = _run("recorder", lambda: relay.record(claims, [_DELIVERED]))
        assert updated.wait(20)
        fanner = _run("fanner", relay.fanout)
        fanner.join(20)
        assert not fanner.is_alive()  # SKIP LOCKED: a fan-out never queues behind a record
        go.set()
        recorder.join(20)
    assert [c.event.id for c in relay.claim()] == second


def test_replayed_dead_letter_goes_before_the_key_s_newer_events(db: Database, tmp_path: Path) -> None:
    relay = _relay(db, tmp_path)
    first, second = add_events(db, [("x.recorded", "K", {}), ("x.recorded", "K", {})])
    relay.fanout()
    claims = relay.claim()
    assert [c.event.id for c in claims] == [first, second]
    relay.record(claims, [Outcome(delivered=False, error="refused", permanent=True), _DELIVERED])
    third = add_events(db, [("x.recorded", "K", {})])
    relay.fanout()
    assert replay(db, "erp", key="K") == 1
    claims = relay.claim()
    assert [c.event.id for c in claims] == [first, *third]
    relay.record(claims, [_DELIVERED, _DELIVERED])
    assert {r.status for r in delivery_rows(db, "erp")} == {"delivered"}


def test_key_flows_after_its_route_is_configured(db: Database, tmp_path: Path) -> None:
    """Events routed to a destination not yet configured are dead letters under its name; once
    it is configured, a new event of the same key is delivered (its earlier rows are skipped by
    the fan-out, not left to make the new one wait behind them)."""
    _write(db, [_ack("acme:1", "acme_sftp"), _ack("acme:1", "acme_sftp")])
    make_relay(db, {"erp": _folder(tmp_path / "erp", ["item.*"])}).run_until_idle()
    assert [r.status for r in delivery_rows(db, "acme_sftp")] == ["dead", "dead"]
    _write(db, [_ack("acme:1", "acme_sftp")])
    relay = make_relay(db, {"acme_sftp": _folder(tmp_path / "acme", [])})
    relay.run_until_idle(timeout=10)
    assert [r.status for r in delivery_rows(db, "acme_sftp")] == ["dead", "dead", "delivered"]
