"""Several relays on one PostgreSQL: disjoint claims, and a killed relay's leases expiring."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import deliveries
from tests.outbox.conftest import Receiver, Reply, add_events
from tests.outbox.helpers import delivery_rows, make_relay

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(cond, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_two_relays_claim_disjoint_deliveries(pg_db: Database, receiver: Receiver) -> None:
    url, path = receiver.route(lambda n: Reply())
    ids = add_events(pg_db, [("x.recorded", f"K{i}", {}) for i in range(200)])
    dests = {"erp": {"type": "http", "url": url}}
    a = make_relay(pg_db, dests, batch_size=15)
    b = make_relay(pg_db, dests, batch_size=15)
    a.fanout()
    barrier = threading.Barrier(2)
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    def claim_all(relay, who: str) -> None:  # noqa: ANN001
        barrier.wait()
        while batch := relay.claim():
            claimed[who] += [c.delivery_id for c in batch]

    threads = [threading.Thread(target=claim_all, args=(r, w)) for r, w in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert claimed["a"] and claimed["b"]
    assert not set(claimed["a"]) & set(claimed["b"])
    assert len(claimed["a"]) + len(claimed["b"]) == 200
    with pg_db.read() as conn:
        owners = dict(conn.execute(select(deliveries.c.id, deliveries.c.claimed_by)).all())
    assert all(owners[i] == a.owner for i in claimed["a"]) and all(owners[i] == b.owner for i in claimed["b"])

    # running side by side, they deliver everything once
    with pg_db.write() as conn:
        conn.execute(deliveries.update().values(claimed_by=None, claimed_until=None))
    a.start()
    b.start()
    try:
        _wait_for(lambda: not a.pending(["erp"]))
    finally:
        a.stop()
        b.stop()
    got = [r.event_id for r in receiver.accepted[path]]
    assert sorted(got) == sorted(ids)


def test_killed_relay_claims_are_delivered_after_the_lease(pg_db: Database, receiver: Receiver) -> None:
    release = threading.Event()
    url, path = receiver.route(lambda n: Reply(hold=release, hold_seconds=60) if n < 2 else Reply())
    ids = add_events(pg_db, [("x.recorded", f"K{i}", {}) for i in range(30)])
    dests = {"erp": {"type": "http", "url": url, "timeout_seconds": 60}}
    spec = {"destinations": dests, "relay": {"workers": 2, "batch_size": 5, "lease_seconds": 1.5,
                                              "poll_seconds": 0.05}}
    owner = f"child-{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-m", "tests.outbox.relay_child", str(pg_db.engine.url.render_as_string(
        hide_password=False)), owner, orjson.dumps(spec).decode()], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        _wait_for(lambda: receiver.counts.get(path, 0) >= 2)  # both workers are mid-batch
        with pg_db.read() as conn:
            held = conn.execute(select(deliveries.c.id).where(deliveries.c.claimed_by == owner)).scalars().all()
        assert len(held) == 10
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    # what the dead relay had sent (it posts several keys of a batch at once), recorded or not
    sent_by_dead = {rec.event_id for rec in receiver.requests[path]}
    assert child.returncode == -signal.SIGKILL
    try:
        survivor = make_relay(pg_db, dests, lease_seconds=30)
        survivor.run_until_idle(timeout=30)
    finally:
        release.set()
    rows = delivery_rows(pg_db, "erp")
    assert {r.status for r in rows} == {"delivered"}
    assert {r.id for r in rows if r.claimed_by is None} == {r.id for r in rows}
    got = [r.event_id for r in receiver.accepted[path]]
    assert set(got) == set(ids)
    dupes = {i for i in got if got.count(i) > 1}
    assert dupes <= sent_by_dead  # at-least-once: only what the dead relay had sent may repeat
