"""The outbox relay: fan events out to destinations, claim due deliveries, deliver, record.

It owns the ``deliveries``, ``delivery_attempts`` and ``destination_state`` rows;
the events themselves are written by :mod:`outbox.writer` and never changed here.
What a destination does with one event is :mod:`outbox.destinations`' business.

**Fan-out.** Per enabled destination, ``destination_state.fanout_cursor`` is
advanced over ``events.seq`` and one ``deliveries`` row is inserted per event
whose type matches the destination's ``subscribe`` patterns (``*`` matches any
run of characters), in one transaction. Writers take the events lock before
inserting (:meth:`bridge.db.Database.lock_events`), so ``seq`` order is commit
order and the cursor never passes an event that commits later (the hazard the
eventsourcing project warns about for auto-increment feeds). On PostgreSQL the
state row is locked ``FOR UPDATE SKIP LOCKED``: one relay process fans out a
destination at a time, the others skip it.

**Claim.** A delivery is due when it is ``pending``, its ``next_attempt_at`` has
come, nobody holds an unexpired lease on it, its destination is not paused, and
no earlier delivery (lower ``event_seq``) of the same destination and ordering
key (``aggregate_type:aggregate_id``) is still pending: order per key, while
different keys flow in parallel and a stuck key blocks only itself. PostgreSQL
claims with ``FOR UPDATE SKIP LOCKED`` and a lease (``claimed_by``,
``claimed_until``), so several processes share the work and a dead process's
claims come back when the lease expires. SQLite serialises claims with
``BEGIN IMMEDIATE`` (SQLAlchemy ignores ``with_for_update`` there). A claim
takes up to ``relay.batch_size`` keys' heads and, behind each head, up to
``relay.run_length - 1`` further due deliveries of that key (holding the head
keeps every other claimer off the key). They are delivered in ``event_seq``
order; after a retryable failure the rest of that key's run is released
untried. A long batch renews its lease halfway through.

**Retry schedule.** Stored in the row (``attempts``, ``next_attempt_at``,
``last_error``), so a restart resumes it. Waits are exponential with full
jitter and a cap (tenacity's ``wait_random_exponential``); a ``Retry-After``
from the far side is a lower bound. A delivery is dead-lettered when the
destination refuses it for good, after ``relay.max_attempts`` attempts, or once
it has been pending longer than ``relay.max_age_seconds`` (counted from its
fan-out or its last replay). Every attempt is a ``delivery_attempts`` row.

**Operations.** :func:`destination_status`, :func:`pause`, :func:`resume` and
:func:`replay` serve the CLI and the API; :meth:`Relay.prune` deletes delivered
deliveries (and their attempts) past the retention period.

Delivery is at-least-once: a process that dies after the far side accepted an
event but before recording it causes one redelivery with the same event id.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from tenacity import RetryCallState, wait_random_exponential

from bridge.db import Database, utcnow
from bridge.db.tables import audit_log, deliveries, delivery_attempts, destination_state, events
from bridge.errors import BridgeError, ConfigError
from bridge.settings import DestinationConfig, RelayConfig, build_component
from outbox.destinations.base import Destination, OutboxEvent, Outcome, attempt

__all__ = [
    "Claim",
    "Relay",
    "destination_status",
    "pause",
    "replay",
    "resume",
    "service_factory",
    "subscription_matcher",
]

log = logging.getLogger(__name__)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
#: stored response bodies and errors are cut to this many characters
_TEXT_LIMIT = 2000
_FANOUT_CHUNK = 5000
#: fanned-out rows after which PostgreSQL statistics of ``deliveries`` are refreshed
_ANALYZE_AFTER = 2000


def subscription_matcher(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for a destination's ``subscribe`` list; ``*`` matches any run of characters."""
    alternatives = [re.escape(p).replace(r"\*", ".*") for p in patterns]
    return re.compile("^(?:" + "|".join(alternatives or ["(?!)"]) + ")$")


@dataclass(slots=True)
class Claim:
    """A delivery this relay holds a lease on, with its event."""

    delivery_id: int
    destination: str
    attempts: int
    created_at: datetime
    event: OutboxEvent


@dataclass(slots=True)
class _Target:
    name: str
    cls: type[Destination]
    config: Any
    matcher: re.Pattern[str]


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:_TEXT_LIMIT]


class Relay:
    """Fan-out, claim, deliver and record for the configured destinations.

    ``start`` runs one fan-out/prune thread and ``config.workers`` delivery
    threads (each with its own destination instances); ``stop`` lets them finish
    the batch in hand. Tests and the CLI may instead drive it step by step with
    :meth:`fanout`, :meth:`work_once` and :meth:`run_until_idle`.
    """

    def __init__(self, db: Database, destinations: Mapping[str, DestinationConfig], config: RelayConfig | None = None,
                 *, owner: str | None = None) -> None:
        self.db = db
        self.config = config or RelayConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.targets: dict[str, _Target] = {}
        for name, dest in destinations.items():
            if not dest.enabled:
                continue
            cls, cfg = build_component("destination", dest.type, dest.options, key=f"destinations.{name}")
            self.targets[name] = _Target(name, cls, cfg, subscription_matcher(dest.subscribe))
        self._wait = wait_random_exponential(multiplier=self.config.backoff_base_seconds,
                                             max=self.config.backoff_cap_seconds)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_prune = 0.0
        self._since_analyze = 0
        self._last_analyze = -1e9

    # -- fan-out ------------------------------------------------------------

    def ensure_state(self) -> None:
        """Create the ``destination_state`` row of every configured destination."""
        if not self.targets:
            return
        now = utcnow()
        rows = [{"name": n, "fanout_cursor": 0, "paused": False, "updated_at": now} for n in self.targets]
        with self.db.write() as conn:
            dialect = pg_dialect if self.db.is_postgres else sqlite_dialect
            conn.execute(dialect.insert(destination_state).values(rows).on_conflict_do_nothing())

    def fanout(self, limit: int = _FANOUT_CHUNK) -> int:
        """Insert deliveries for events past each destination's cursor; returns how many."""
        total = 0
        for target in self.targets.values():
            with self.db.write() as conn:
                q = select(destination_state.c.fanout_cursor).where(destination_state.c.name == target.name)
                if self.db.is_postgres:
                    q = q.with_for_update(skip_locked=True)
                cursor = conn.execute(q).scalar()
                if cursor is None:  # another process holds it, or ensure_state has not run
                    continue
                rows = conn.execute(
                    select(events.c.seq, events.c.event_type, events.c.aggregate_type, events.c.aggregate_id)
                    .where(events.c.seq > cursor).order_by(events.c.seq).limit(limit)
                ).all()
                if not rows:
                    continue
                now = utcnow()
                new = [
                    {"event_seq": r.seq, "destination": target.name,
                     "ordering_key": f"{r.aggregate_type}:{r.aggregate_id}"[:320], "status": PENDING,
                     "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
                    for r in rows if target.matcher.match(r.event_type)
                ]
                if new:
                    conn.execute(insert(deliveries), new)
                conn.execute(update(destination_state).where(destination_state.c.name == target.name)
                             .values(fanout_cursor=rows[-1].seq, updated_at=now))
                total += len(new)
        if total and self.db.is_postgres:
            self._maybe_analyze(total)
        return total

    def _maybe_analyze(self, inserted: int) -> None:
        # A queue table that grows by thousands of rows between autovacuum runs leaves the
        # planner with stale statistics; it then plans the per-key "no earlier pending
        # delivery" anti-join as a scan of every pending row for every candidate (seconds
        # per claim instead of a millisecond). Refresh them after a large fan-out.
        self._since_analyze += inserted
        if self._since_analyze < _ANALYZE_AFTER or time.monotonic() - self._last_analyze < 30:
            return
        self._since_analyze = 0
        self._last_analyze = time.monotonic()
        with self.db.write() as conn:
            conn.exec_driver_sql("ANALYZE deliveries")

    # -- claim ----------------------------------------------------------------

    def claim(self, limit: int | None = None, *, names: Iterable[str] | None = None) -> list[Claim]:
        """Lease due deliveries to this relay: up to ``limit`` keys' heads, each followed by up to
        ``relay.run_length - 1`` further due deliveries of the same key; returned in ``event_seq`` order."""
        limit = limit or self.config.batch_size
        wanted = list(names) if names is not None else list(self.targets)
        if not wanted:
            return []
        now = utcnow()
        d = deliveries.alias("d")
        columns = (d.c.id, d.c.destination, d.c.ordering_key, d.c.attempts, d.c.created_at, events.c.seq,
                   events.c.id.label("event_id"), events.c.event_type, events.c.aggregate_type, events.c.aggregate_id,
                   events.c.created_at.label("ev_at"), events.c.payload, events.c.correlation_id)
        with self.db.write() as conn:
            active = conn.execute(
                select(destination_state.c.name).where(destination_state.c.name.in_(wanted),
                                                       destination_state.c.paused.is_(False))
            ).scalars().all()
            if not active:
                return []
            e = deliveries.alias("e")
            earlier = (select(e.c.id).where(e.c.destination == d.c.destination, e.c.ordering_key == d.c.ordering_key,
                                            e.c.event_seq < d.c.event_seq, e.c.status == PENDING)
                       .correlate(d))
            if self.db.is_postgres:
                # OFFSET 0 keeps the probe a per-candidate index lookup (ix_deliveries_pending_key):
                # pulled up into an anti-join, PostgreSQL plans it as a nested scan of every pending
                # row whenever the statistics of a fast-growing deliveries table are stale
                earlier = earlier.offset(0)
            q = (
                select(*columns)
                .join(events, events.c.seq == d.c.event_seq)
                .where(d.c.destination.in_(active), d.c.status == PENDING, d.c.next_attempt_at <= now,
                       or_(d.c.claimed_until.is_(None), d.c.claimed_until < now), ~exists(earlier))
                .order_by(d.c.event_seq)
                .limit(limit)
            )
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True, of=d)
            rows = list(conn.execute(q).all())
            if not rows:
                return []
            if self.config.run_length > 1:
                rows += self._runs(conn, rows, columns, now)
            # the lease runs from now, not from when the (possibly slow) query started
            until = utcnow() + timedelta(seconds=self.config.lease_seconds)
            # The UPDATE re-checks "pending and not leased" on the current row version (PostgreSQL
            # re-evaluates it after waiting for a concurrent writer), so a row another claimer
            # got first is never taken twice, whatever snapshot the SELECTs above saw.
            got = set(conn.execute(
                update(deliveries).where(deliveries.c.id.in_([r.id for r in rows]), deliveries.c.status == PENDING,
                                         or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < now))
                .values(claimed_by=self.owner, claimed_until=until).returning(deliveries.c.id)
            ).scalars())
        rows.sort(key=lambda r: r.seq)
        if len(got) < len(rows):
            # keep order per key: after a row we did not get, the key's later rows are not ours
            lost: set[tuple[str, str]] = set()
            kept = []
            for r in rows:
                k = (r.destination, r.ordering_key)
                if r.id not in got or k in lost:
                    lost.add(k)
                    continue
                kept.append(r)
            dropped = [r.id for r in rows if r.id in got and (r.destination, r.ordering_key) in lost]
            if dropped:
                with self.db.write() as conn:
                    conn.execute(update(deliveries).where(deliveries.c.id.in_(dropped),
                                                          deliveries.c.claimed_by == self.owner)
                                 .values(claimed_by=None, claimed_until=None))
            rows = kept
        return [
            Claim(r.id, r.destination, r.attempts, r.created_at,
                  OutboxEvent(seq=r.seq, id=r.event_id, type=r.event_type, aggregate_type=r.aggregate_type,
                              aggregate_id=r.aggregate_id, created_at=r.ev_at, payload=r.payload,
                              correlation_id=r.correlation_id))
            for r in rows
        ]

    def _runs(self, conn: Any, heads: list[Any], columns: Sequence[Any], now: datetime) -> list[Any]:
        """The due deliveries right behind each claimed head, in key order, stopping at the first
        one that is not due. Holding a key's head is what makes its followers ours: every other
        claimer sees the head pending and leaves the whole key alone, so no row lock is needed."""
        mine = {(h.destination, h.ordering_key) for h in heads}
        d = columns[0].table
        ranked = (
            select(d.c.id, func.row_number().over(partition_by=(d.c.destination, d.c.ordering_key),
                                                  order_by=d.c.event_seq).label("rn"))
            .where(d.c.destination.in_({h.destination for h in heads}),
                   d.c.ordering_key.in_({h.ordering_key for h in heads}), d.c.status == PENDING)
            .subquery()
        )
        q = (select(*columns, d.c.next_attempt_at, d.c.claimed_until)
             .join(events, events.c.seq == d.c.event_seq)
             .join(ranked, ranked.c.id == d.c.id)
             .where(ranked.c.rn > 1, ranked.c.rn <= self.config.run_length)
             .order_by(d.c.destination, d.c.ordering_key, d.c.event_seq))
        out: list[Any] = []
        stopped: set[tuple[str, str]] = set()
        for r in conn.execute(q).all():
            k = (r.destination, r.ordering_key)
            if k not in mine or k in stopped:
                continue
            if r.next_attempt_at > now or (r.claimed_until is not None and r.claimed_until >= now):
                stopped.add(k)
                continue
            out.append(r)
        return out

    # -- deliver and record -------------------------------------------------

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1`` (full jitter, capped)."""
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempts)
        return float(self._wait(state))

    def deliver(self, claims: Sequence[Claim], instances: Mapping[str, Destination]) -> list[Outcome | None]:
        """Deliver claimed events in ``event_seq`` order and record the outcomes.

        Once an event of a key fails and will be retried, the rest of that key's claims in
        this batch are released untried (``None``): order per key outlives the batch.
        """
        blocked: set[tuple[str, str]] = set()
        outcomes: list[Outcome | None] = []
        lease = self.config.lease_seconds
        renew_at = time.monotonic() + lease / 2
        for i, c in enumerate(claims):
            if time.monotonic() >= renew_at:
                # a slow far side (timeouts on every head) must not let our lease lapse mid-batch,
                # or another relay would deliver the same events again
                self._renew([x.delivery_id for x in claims[i:]])
                renew_at = time.monotonic() + lease / 2
            k = (c.destination, c.event.ordering_key)
            if k in blocked:
                outcomes.append(None)
                continue
            o = attempt(instances[c.destination], c.event)
            if not o.delivered and not self._will_die(c, o):
                blocked.add(k)
            outcomes.append(o)
        self.record(claims, outcomes)
        return outcomes

    def _renew(self, ids: list[int]) -> None:
        until = utcnow() + timedelta(seconds=self.config.lease_seconds)
        with self.db.write() as conn:
            for i in range(0, len(ids), 1000):
                conn.execute(update(deliveries).where(deliveries.c.id.in_(ids[i:i + 1000]),
                                                      deliveries.c.claimed_by == self.owner)
                             .values(claimed_until=until))

    def _will_die(self, c: Claim, o: Outcome, now: datetime | None = None) -> str | None:
        """Why a failed attempt dead-letters the delivery, or None when it will be retried."""
        if o.permanent:
            return "refused"
        attempts = c.attempts + 1
        if attempts >= self.config.max_attempts:
            return f"gave up after {attempts} attempts"
        age = ((now or utcnow()) - c.created_at).total_seconds()
        if age >= self.config.max_age_seconds:
            return f"gave up after {age:.0f}s pending"
        return None

    def record(self, claims: Sequence[Claim], outcomes: Sequence[Outcome | None]) -> None:
        """Store each attempt and move each delivery to delivered, dead or its next retry;
        a ``None`` outcome releases the claim untried."""
        now = utcnow()
        attempt_rows: list[dict[str, Any]] = []
        done: list[dict[str, Any]] = []
        retry: list[dict[str, Any]] = []
        released: list[int] = []
        for c, o in zip(claims, outcomes, strict=True):
            if o is None:
                released.append(c.delivery_id)
                continue
            attempts = c.attempts + 1
            outcome = "delivered"
            if o.delivered:
                done.append({"b_id": c.delivery_id, "b_code": o.status_code})
            else:
                dead_reason = self._will_die(c, o, now)
                error = o.error or "delivery failed"
                if dead_reason is not None:
                    outcome = "dead"
                    status, when = DEAD, now
                    if not o.permanent:
                        error = f"{error} ({dead_reason})"
                else:
                    outcome = "retry"
                    wait = self.backoff(attempts)
                    if o.retry_after is not None:
                        wait = max(wait, o.retry_after)
                    status, when = PENDING, now + timedelta(seconds=wait)
                retry.append({"b_id": c.delivery_id, "b_attempts": attempts, "b_status": status, "b_next": when,
                              "b_error": _cut(error), "b_code": o.status_code})
            attempt_rows.append({"delivery_id": c.delivery_id, "started_at": now - timedelta(milliseconds=o.duration_ms),
                                 "duration_ms": o.duration_ms, "outcome": outcome, "status_code": o.status_code,
                                 "error": _cut(o.error), "response": _cut(o.response)})
        mine = and_(deliveries.c.id == bindparam("b_id"),
                    or_(deliveries.c.claimed_by == self.owner, deliveries.c.claimed_by.is_(None)))
        with self.db.write() as conn:
            # the common case in one statement per status code rather than one per row;
            # attempts + 1 is exact because the claim (our lease) kept everyone else off these rows
            by_code: dict[int | None, list[int]] = {}
            for row in done:
                by_code.setdefault(row["b_code"], []).append(row["b_id"])
            for code, ids in by_code.items():
                conn.execute(update(deliveries).where(
                    deliveries.c.id.in_(ids),
                    or_(deliveries.c.claimed_by == self.owner, deliveries.c.claimed_by.is_(None))).values(
                    status=DELIVERED, attempts=deliveries.c.attempts + 1, delivered_at=now, updated_at=now,
                    claimed_by=None, claimed_until=None, last_error=None, last_status_code=code))
            if retry:
                conn.execute(update(deliveries).where(mine).values(
                    status=bindparam("b_status"), attempts=bindparam("b_attempts"), next_attempt_at=bindparam("b_next"),
                    updated_at=now, claimed_by=None, claimed_until=None, last_error=bindparam("b_error"),
                    last_status_code=bindparam("b_code")), retry)
            if attempt_rows:
                conn.execute(insert(delivery_attempts), attempt_rows)
            if released:
                conn.execute(update(deliveries).where(deliveries.c.id.in_(released),
                                                      deliveries.c.claimed_by == self.owner)
                             .values(claimed_by=None, claimed_until=None))

    def open_instances(self) -> dict[str, Destination]:
        """One destination instance per configured destination, for one worker thread."""
        return {name: t.cls(name, t.config) for name, t in self.targets.items()}

    def work_once(self, instances: Mapping[str, Destination]) -> int:
        """Claim one batch, deliver it, record it; returns the number of deliveries handled."""
        claims = self.claim()
        if claims:
            self.deliver(claims, instances)
        return len(claims)

    def run_until_idle(self, timeout: float = 30.0) -> None:
        """Fan out and deliver until nothing is pending (for tests and one-shot runs)."""
        self.ensure_state()
        instances = self.open_instances()
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.fanout()
                n = self.work_once(instances)
                if n == 0:
                    if not self.pending(list(self.targets)):
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError("deliveries still pending")
                    time.sleep(0.01)
        finally:
            for inst in instances.values():
                inst.close()

    def pending(self, names: Sequence[str]) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.destination.in_(names), deliveries.c.status == PENDING)).scalar() or 0)

    # -- retention ------------------------------------------------------------

    def prune(self, *, now: datetime | None = None) -> int:
        """Delete delivered deliveries (and their attempts) older than the retention period."""
        cutoff = (now or utcnow()) - timedelta(days=self.config.retention_days)
        old = select(deliveries.c.id).where(deliveries.c.status == DELIVERED, deliveries.c.delivered_at < cutoff)
        with self.db.write() as conn:
            conn.execute(delete(delivery_attempts).where(delivery_attempts.c.delivery_id.in_(old)))
            n = conn.execute(delete(deliveries).where(deliveries.c.status == DELIVERED,
                                                      deliveries.c.delivered_at < cutoff)).rowcount
        return int(n or 0)

    # -- service --------------------------------------------------------------

    def start(self) -> None:
        self.ensure_state()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._fanout_loop, name="relay-fanout", daemon=True)]
        self._threads += [threading.Thread(target=self._work_loop, name=f"relay-{i}", daemon=True)
                          for i in range(self.config.workers)]
        for t in self._threads:
            t.start()
        log.info("relay started", extra={"destinations": sorted(self.targets), "workers": self.config.workers})

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        log.info("relay stopped")

    def _fanout_loop(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.fanout()
                if time.monotonic() - self._last_prune >= self.config.prune_interval_seconds:
                    self._last_prune = time.monotonic()
                    pruned = self.prune()
                    if pruned:
                        log.info("deliveries pruned", extra={"count": pruned})
            except BridgeError as exc:
                log.error("fan-out failed", extra={"error": str(exc)})
                n = 0
            except Exception:  # noqa: BLE001 - the loop must never die
                log.exception("fan-out crashed")
                n = 0
            if n < _FANOUT_CHUNK // 2:
                self._stop.wait(self.config.poll_seconds)

    def _work_loop(self) -> None:
        instances = self.open_instances()
        try:
            while not self._stop.is_set():
                try:
                    n = self.work_once(instances)
                except BridgeError as exc:
                    log.error("delivery batch failed; its claims return when the lease expires",
                              extra={"error": str(exc)})
                    n = 0
                except Exception:  # noqa: BLE001 - the worker loop must never die
                    log.exception("delivery batch crashed; its claims return when the lease expires")
                    n = 0
                if n == 0:
                    self._stop.wait(self.config.poll_seconds)
        finally:
            for inst in instances.values():
                try:
                    inst.close()
                except Exception:  # noqa: BLE001
                    log.exception("destination close failed")


def service_factory(runtime: Any) -> Relay | None:
    """``bridge.runtime.SERVICES`` entry: the relay, or None when no destination is enabled."""
    settings = runtime.settings
    if not any(d.enabled for d in settings.destinations.values()):
        return None
    return Relay(runtime.db, settings.destinations, settings.relay)


# -- operator actions (CLI and API) -----------------------------------------


def destination_status(db: Database, names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Per destination: paused, backlog, oldest pending age, retrying, attempts, dead letters, delivered."""
    now = utcnow()
    with db.read() as conn:
        states = {r.name: r for r in conn.execute(select(destination_state)).all()}
        head = conn.execute(select(func.max(events.c.seq))).scalar() or 0
        agg = conn.execute(
            select(deliveries.c.destination, deliveries.c.status, func.count(), func.sum(deliveries.c.attempts),
                   func.min(deliveries.c.created_at))
            .group_by(deliveries.c.destination, deliveries.c.status)
        ).all()
        retrying: dict[str, int] = dict(conn.execute(
            select(deliveries.c.destination, func.count()).where(deliveries.c.status == PENDING,
                                                                 deliveries.c.attempts > 0)
            .group_by(deliveries.c.destination)).all())
    out: dict[str, dict[str, Any]] = {}
    for name in [*names, *states]:
        if name in out:
            continue
        st = states.get(name)
        out[name] = {"name": name, "paused": bool(st.paused) if st else False,
                     "paused_reason": st.paused_reason if st else None,
                     "fanout_lag": head - (st.fanout_cursor if st else 0),
                     "backlog": 0, "oldest_pending_seconds": None, "retrying": retrying.get(name, 0),
                     "attempts": 0, "dead": 0, "delivered": 0}
    for dest, status, count, attempts, oldest in agg:
        row = out.setdefault(dest, {"name": dest, "paused": False, "paused_reason": None, "fanout_lag": None,
                                    "backlog": 0, "oldest_pending_seconds": None, "retrying": 0,
                                    "attempts": 0, "dead": 0, "delivered": 0})
        row["attempts"] += int(attempts or 0)
        if status == PENDING:
            row["backlog"] = int(count)
            if oldest is not None:
                row["oldest_pending_seconds"] = round((now - oldest).total_seconds(), 3)
        elif status == DEAD:
            row["dead"] = int(count)
        elif status == DELIVERED:
            row["delivered"] = int(count)
    return sorted(out.values(), key=lambda r: r["name"])


def _audit(conn: Any, actor: str, action: str, target: str, reason: str | None, details: dict[str, Any]) -> None:
    conn.execute(insert(audit_log).values(at=utcnow(), actor=actor, action=action, target=target, reason=reason,
                                          details=orjson.dumps(details, default=str).decode()))


def _set_paused(db: Database, name: str, paused: bool, reason: str | None, actor: str) -> None:
    now = utcnow()
    with db.write() as conn:
        n = conn.execute(update(destination_state).where(destination_state.c.name == name)
                         .values(paused=paused, paused_reason=reason if paused else None, updated_at=now)).rowcount
        if not n:
            conn.execute(insert(destination_state).values(name=name, fanout_cursor=0, paused=paused,
                                                          paused_reason=reason if paused else None, updated_at=now))
        _audit(conn, actor, "destinations.pause" if paused else "destinations.resume", name, reason, {})


def pause(db: Database, name: str, reason: str | None = None, *, known: Iterable[str] | None = None,
          actor: str = "system") -> None:
    """Stop claiming deliveries for ``name`` (fan-out continues, so the backlog is kept); audited."""
    _check_known(name, known)
    _set_paused(db, name, True, reason, actor)


def resume(db: Database, name: str, *, known: Iterable[str] | None = None, actor: str = "system") -> None:
    """Claim deliveries for ``name`` again; audited."""
    _check_known(name, known)
    _set_paused(db, name, False, None, actor)


def _check_known(name: str, known: Iterable[str] | None) -> None:
    if known is not None and name not in set(known):
        raise ConfigError(f"destinations.{name}", "no such destination is configured")


def replay(db: Database, destination: str, *, event_type: str | None = None, key: str | None = None,
           since: datetime | None = None, until: datetime | None = None, status: str = DEAD,
           actor: str = "system", reason: str | None = None) -> int:
    """Reset matching ``dead`` or ``delivered`` deliveries of ``destination`` to pending; returns how many.

    ``event_type`` may use ``*`` wildcards; ``key`` matches the ordering key
    (``aggregate_type:aggregate_id``) or the bare aggregate id; ``since``/``until``
    bound the event's ``created_at`` (inclusive, exclusive). The attempt count and
    the age clock restart, so the retry budget applies afresh.
    """
    if status not in (DEAD, DELIVERED):
        raise ConfigError("replay.status", "must be 'dead' or 'delivered'")
    ev = [events.c.seq == deliveries.c.event_seq]
    if event_type:
        if "*" in event_type:
            ev.append(events.c.event_type.like(event_type.replace("%", r"\%").replace("_", r"\_").replace("*", "%"),
                                               escape="\\"))
        else:
            ev.append(events.c.event_type == event_type)
    if since is not None:
        ev.append(events.c.created_at >= since)
    if until is not None:
        ev.append(events.c.created_at < until)
    cond = [deliveries.c.destination == destination, deliveries.c.status == status]
    if key:
        cond.append(or_(deliveries.c.ordering_key == key, deliveries.c.ordering_key.like(
            "%:" + key.replace("%", r"\%").replace("_", r"\_"), escape="\\")))
    if len(ev) > 1:
        cond.append(exists(select(events.c.seq).where(*ev)))
    now = utcnow()
    with db.write() as conn:
        n = conn.execute(update(deliveries).where(*cond).values(
            status=PENDING, attempts=0, next_attempt_at=now, claimed_by=None, claimed_until=None,
            last_error=None, delivered_at=None, created_at=now, updated_at=now)).rowcount
        _audit(conn, actor, "destinations.replay", destination, reason,
               {"type": event_type, "key": key, "since": since, "until": until, "status": status, "count": n})
    return int(n or 0)

