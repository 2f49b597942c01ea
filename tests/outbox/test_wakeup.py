"""A running relay delivers what a writer commits without waiting for its poll, on both backends:
in-process through the engine's commit hook, across processes through PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.db import Database
from tests.outbox.conftest import add_events
from tests.outbox.helpers import delivery_rows, make_relay


def _delivered_within(db: Database, n: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sum(r.status == "delivered" for r in delivery_rows(db, "f")) == n:
            return True
        time.sleep(0.02)
    return False


def test_commit_wakes_an_idle_relay(db: Database, tmp_path: Path) -> None:
    # a poll interval far longer than the test: only a wake-up can deliver in time
    relay = make_relay(db, {"f": {"type": "folder", "directory": str(tmp_path / "out")}}, poll_seconds=3600)
    other = Database(db.engine.url.render_as_string(hide_password=False)) if db.is_postgres else db
    relay.start()
    try:
        time.sleep(0.2)  # both loops are idle, waiting
        add_events(other, [("x.recorded", "A", {})])  # on PostgreSQL: another engine, as another process
        assert _delivered_within(db, 1, 20)
        add_events(db, [("x.recorded", "B", {}), ("x.recorded", "A", {})])  # this process's engine
        assert _delivered_within(db, 3, 20)
    finally:
        relay.stop()
        if other is not db:
            other.dispose()
    assert len(list((tmp_path / "out").iterdir())) == 3
