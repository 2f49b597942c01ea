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

**Routes.** An event with a ``route`` (``events.route``, set from
``EventDraft.route``: an X12 TA1/999/997 or HL7 ACK for its sender, an 850 for
its vendor, addressed to the partner's ``return_channel``) goes to the
destination of that name only, and goes there *whatever its* ``subscribe``
*list says*: a route is an address, like a direct exchange's binding, and a
partner's return channel usually subscribes to nothing (``subscribe: []``) so
that it gets its own ACKs and files and none of the broadcast traffic. No other
destination sees a routed event, even one subscribed to ``*``. A route that
names no configured destination (a typo, a partner whose channel was never set
up) does not vanish: the fan-out records a ``dead`` delivery under that name
with the reason "no destination named ... is configured", so ``bridge
destinations status`` and ``GET /v1/destinations`` list the name (type null)
with its dead letters; once the destination is configured, ``replay`` sends
them. A route naming a configured but disabled destination waits in that
destination's fan-out lag, like its subscribed events.

**Claim.** A delivery is due when it is ``pending``, its ``next_attempt_at`` has
come, nobody holds an unexpired lease on it, its destination is not paused, and
no earlier delivery (lower ``event_seq``) of the same destination and ordering
key (``aggregate_type:aggregate_id``) is still pending: order per key, while
different keys flow in parallel and a stuck key blocks only itself. A claim
takes up to ``relay.batch_size`` keys' heads, oldest first, and behind each head
up to ``relay.run_length - 1`` further due deliveries of that key, stopping at
the first that is not due. Only the heads are leased (``claimed_by``,
``claimed_until``): holding a key's head keeps every other claimer off the
whole key (they all see an earlier pending delivery), so a dead process's key
comes back when its head's lease expires, and a claim writes one row per key,
not one per event. On PostgreSQL the claim is one statement
(:data:`_PG_CLAIM`): heads row-locked ``FOR UPDATE SKIP LOCKED`` (several
processes take disjoint heads), the runs read by a LATERAL range scan per head,
the lease written, the events returned. SQLite serialises claims with ``BEGIN
IMMEDIATE`` (SQLAlchemy ignores ``with_for_update`` there) and claims in three
plain statements.

**Heads.** A claim looks for heads only among the rows flagged ``head``
(migration 0005, index ``ix_deliveries_pending_head``), never among the
followers: walking every pending row made each claim read the whole backlog
when most keys were held by other workers or processes. The flag may be set on
a row that is not (yet) its key's first pending one, so the claim still probes
"an earlier pending delivery of this key?" for each flagged candidate (one index
lookup); what must never happen is a key whose first pending row is unflagged,
for then the key stalls. So: the fan-out flags the first new delivery of a key
with nothing pending (see :data:`_PG_HELD_KEYS` for the race with a record on
PostgreSQL); :meth:`Relay.record` flags the next pending delivery of each key
whose head was delivered or dead-lettered (:data:`_PG_PROMOTE`); a replayed
delivery is flagged.

**Delivery.** Each destination gets its share of a batch in one
``deliver_many`` call (``amqp`` pipelines the batch and collects the publisher
confirms; ``http`` posts several keys at once, each key in order). After a
retryable failure of a key, the rest of that key's claims are released, also
those a pipelining destination already sent: they go again after the failed
one, duplicates with the same event id. A background timer renews the lease
every half lease while a batch is out.

**Wake-ups.** ``relay.poll_seconds`` is only the fallback. A transaction of
this process that inserted events wakes the fan-out when it commits (an engine
``commit`` hook); on PostgreSQL, a trigger on ``events`` (migration 0004)
sends ``NOTIFY bridge_outbox`` at commit and every relay process listens, and
the fan-out notifies the workers of every process when it inserts deliveries.
A worker that got a batch claims again at once, and one that got a full batch
(``relay.batch_size`` keys) first wakes an idle colleague.

**Retry schedule.** Stored in the row (``attempts``, ``next_attempt_at``,
``last_error``), so a restart resumes it. Waits are exponential with full
jitter and a cap (tenacity's ``wait_random_exponential``); a ``Retry-After``
from the far side is a lower bound. A delivery is dead-lettered when the
destination refuses it for good, after ``relay.max_attempts`` attempts, or once
it has been pending longer than ``relay.max_age_seconds`` (counted from its
fan-out or its last replay). Every attempt is a ``delivery_attempts`` row; on PostgreSQL a batch's outcomes are
written by array statements, not row by row: the delivered ones by one UPDATE
over their ids (per status code), the failed ones by one over ``unnest``
arrays, the attempts by one INSERT.

**Operations.** :func:`destination_status`, :func:`pause`, :func:`resume` and
:func:`replay` serve the CLI and the API; :meth:`Relay.prune` deletes delivered
deliveries (and their attempts) past the retention period.

Delivery is at-least-once: a process that dies after the far side accepted an
event but before recording it causes one redelivery with the same event id.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import (
    and_,
    bindparam,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from tenacity import RetryCallState, wait_random_exponential

from bridge.db import Database, audit, like_escape, utcnow
from bridge.db.tables import deliveries, delivery_attempts, destination_state, events
from bridge.errors import BridgeError, ConfigError
from bridge.settings import DestinationConfig, RelayConfig, build_component
from outbox.destinations.base import Destination, OutboxEvent, Outcome, attempt_many

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
#: an idle worker waits up to this many poll intervals between claims (wake-ups cut it short)
_IDLE_POLLS = 8
#: fanned-out rows after which PostgreSQL statistics of ``deliveries`` are refreshed
_ANALYZE_AFTER = 2000


# The PostgreSQL claim (see Relay._claim_pg). ``heads``: due, unleased pending deliveries flagged
# ``head`` (ix_deliveries_pending_head) with no earlier pending delivery of their key, oldest first,
# row-locked SKIP LOCKED so concurrent claimers take disjoint heads (OFFSET 0 keeps the probe a
# per-candidate index lookup: pulled up into an anti-join, PostgreSQL plans a nested scan of every
# pending row whenever the statistics of this fast-growing table are stale). ``runs``: behind each
# head, the next pending deliveries of its key up to the first one that is not due or is leased
# (bool_and over the key's order). Only the heads are leased (``leased``): holding a key's head
# keeps every other claimer off the whole key, so followers need neither a row lock nor a lease of
# their own, and a claim writes one row version per key instead of one per event.
_PG_CLAIM = """
WITH heads AS (
    SELECT d.id, d.destination, d.ordering_key, d.event_seq
    FROM deliveries d
    WHERE d.status = 'pending' AND d.head AND d.next_attempt_at <= %(now)s
      AND (d.claimed_until IS NULL OR d.claimed_until < %(now)s)
      AND d.destination = ANY(ARRAY(SELECT s.name FROM destination_state s
                                    WHERE s.name = ANY(%(names)s) AND NOT s.paused))
      AND NOT EXISTS (SELECT 1 FROM deliveries e
                      WHERE e.destination = d.destination AND e.ordering_key = d.ordering_key
                        AND e.event_seq < d.event_seq AND e.status = 'pending' OFFSET 0)
    ORDER BY d.event_seq
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
), runs AS (
    SELECT f.id FROM heads h CROSS JOIN LATERAL (
        SELECT r.id, bool_and(r.ok) OVER (ORDER BY r.event_seq) AS all_ok FROM (
            SELECT e.id, e.event_seq,
                   e.next_attempt_at <= %(now)s AND (e.claimed_until IS NULL OR e.claimed_until < %(now)s) AS ok
            FROM deliveries e
            WHERE e.destination = h.destination AND e.ordering_key = h.ordering_key
              AND e.status = 'pending' AND e.event_seq > h.event_seq
            ORDER BY e.event_seq LIMIT %(follow)s
        ) r
    ) f WHERE f.all_ok
), leased AS (
    UPDATE deliveries d SET claimed_by = %(owner)s, claimed_until = %(until)s
    FROM heads h WHERE d.id = h.id RETURNING d.id
)
SELECT d.id, d.destination, d.ordering_key, d.attempts, d.created_at, ev.seq, ev.id AS event_id, ev.event_type,
       ev.aggregate_type, ev.aggregate_id, ev.created_at AS ev_at, ev.payload, ev.correlation_id
FROM deliveries d JOIN events ev ON ev.seq = d.event_seq
WHERE d.id IN (SELECT id FROM leased UNION ALL SELECT id FROM runs)
ORDER BY ev.seq
"""


_ATTEMPT_COLS = ("delivery_id", "started_at", "duration_ms", "outcome", "status_code", "error", "response")
# Relay.record on PostgreSQL, failed attempts (retried or dead): arrays bound in binary (%b)
_PG_RECORD = """
UPDATE deliveries d SET status = u.status, attempts = u.attempts, next_attempt_at = u.next, updated_at = %s,
       claimed_by = NULL, claimed_until = NULL, last_error = u.error, last_status_code = u.code
FROM unnest(%b::bigint[], %b::text[], %b::int[], %b::timestamptz[], %b::text[], %b::int[])
     AS u(id, status, attempts, next, error, code)
WHERE d.id = u.id AND (d.claimed_by = %s OR d.claimed_by IS NULL)
"""
_PG_ATTEMPTS = (f"INSERT INTO delivery_attempts ({', '.join(_ATTEMPT_COLS)}) SELECT * FROM "
                "unnest(%b::bigint[], %b::timestamptz[], %b::float8[], %b::text[], %b::int[], %b::text[], %b::text[])")
# Relay.record's common case, delivered: one statement per status code, ids only
_PG_DELIVERED = ("UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = %s, "
                 "updated_at = %s, claimed_by = NULL, claimed_until = NULL, last_error = NULL, last_status_code = %s "
                 "WHERE id = ANY(%b::bigint[]) AND (claimed_by = %s OR claimed_by IS NULL)")
_PG_RELEASE = ("UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL "
               "WHERE id = ANY(%b::bigint[]) AND claimed_by = %s")


#: a fanned-out row's own columns; every row of one fan-out shares the rest (_FANOUT_SAME)
_DELIVERY_COLS = ("event_seq", "destination", "ordering_key", "status", "last_error", "head")
_FANOUT_SAME = ("attempts", "next_attempt_at", "created_at", "updated_at")
_PG_FANOUT = (f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLS + _FANOUT_SAME)}) SELECT u.*, 0, %s, %s, %s FROM "
              "unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bool[]) AS u "
              "ON CONFLICT DO NOTHING")
# The fan-out's "which of these keys already has a pending delivery?" (see Relay._held_keys): the
# latest pending row of each key from before this fan-out (seq up to its cursor), share-locked so
# that it cannot leave ``pending`` before the new rows commit (a record that finishes it waits, and
# its promotion, a later statement, then sees them); a locked one (a record or a claim at work on
# it) is skipped and its key counts as free, so the new row is flagged head: a flag too many costs
# the claim one probe, one too few would stall the key.
_PG_HELD_KEYS = """
SELECT k.key FROM unnest(%b::text[]) AS k(key) CROSS JOIN LATERAL (
    SELECT 1 FROM deliveries e
    WHERE e.destination = %s AND e.ordering_key = k.key AND e.status = 'pending' AND e.event_seq <= %s
    ORDER BY e.event_seq DESC LIMIT 1 FOR SHARE SKIP LOCKED
) AS l
"""
# Relay.record: flag the first pending delivery of each key whose head left ``pending``. A statement
# of its own, after the status UPDATE: under READ COMMITTED it sees the rows a fan-out committed
# meanwhile (one that share-locked a row updated here committed before that UPDATE went on).
_PG_PROMOTE = """
UPDATE deliveries d SET head = true
FROM unnest(%b::text[], %b::text[]) AS k(destination, ordering_key) CROSS JOIN LATERAL (
    SELECT e.id FROM deliveries e
    WHERE e.destination = k.destination AND e.ordering_key = k.ordering_key AND e.status = 'pending'
    ORDER BY e.event_seq LIMIT 1
) AS f
WHERE d.id = f.id AND NOT d.head
"""
_SQLITE_PROMOTE = """
UPDATE deliveries SET head = 1 WHERE id = (
    SELECT e.id FROM deliveries e
    WHERE e.destination = :destination AND e.ordering_key = :ordering_key AND e.status = 'pending'
    ORDER BY e.event_seq LIMIT 1)
"""


def _columns(rows: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Row tuples as column lists, for ``unnest``."""
    return tuple(list(c) for c in zip(*rows, strict=True))


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


#: PostgreSQL notification channel; payload "events <schema>" (trigger of migration 0004) or
#: "deliveries <schema>" (the fan-out), so relays of other schemas in one database ignore it
_CHANNEL = "bridge_outbox"
_WROTE_EVENTS = "bridge.outbox.wrote_events"


def _forget_events(conn: Any) -> None:
    conn.info.pop(_WROTE_EVENTS, None)


def _note_events(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    if statement.startswith("INSERT INTO events "):
        conn.info[_WROTE_EVENTS] = True


def _unroutable(route: str) -> str:
    return f"no destination named {route!r} is configured (the event's route); configure it, then replay"


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:_TEXT_LIMIT]


class Relay:
    """Fan-out, claim, deliver and record for the configured destinations.

    ``start`` runs one fan-out/prune thread, ``config.workers`` delivery threads
    (each with its own destination instances) and, on PostgreSQL, one LISTEN
    thread; ``stop`` lets them finish the batch in hand. Tests and the CLI may instead drive it step by step with
    :meth:`fanout`, :meth:`work_once` and :meth:`run_until_idle`.
    """

    def __init__(self, db: Database, destinations: Mapping[str, DestinationConfig], config: RelayConfig | None = None,
                 *, owner: str | None = None) -> None:
        self.db = db
        self.config = config or RelayConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.targets: dict[str, _Target] = {}
        #: every destination in the config, enabled or not: a route naming none of them is unroutable
        self.configured = frozenset(destinations)
        for name, dest in destinations.items():
            if not dest.enabled:
                continue
            cls, cfg = build_component("destination", dest.type, dest.options, key=f"destinations.{name}")
            self.targets[name] = _Target(name, cls, cfg, subscription_matcher(dest.subscribe))
        self._wait = wait_random_exponential(multiplier=self.config.backoff_base_seconds,
                                             max=self.config.backoff_cap_seconds)
        self._stop = threading.Event()
        #: set when events may be waiting for fan-out; workers wait on _work_due for new deliveries
        self._fanout_due = threading.Event()
        self._work_due = threading.Condition()
        self._work_gen = 0
        # this relay's own callables (not shared module functions), so event.remove takes out
        # exactly what this relay added when several relays share one engine
        self._hooks: tuple[tuple[str, Any], ...] = (
            ("begin", functools.partial(_forget_events)), ("after_cursor_execute", functools.partial(_note_events)),
            ("commit", self._commit_seen))
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
            conn.execute(self._insert_ignore(destination_state).values(rows))

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
                    select(events.c.seq, events.c.event_type, events.c.aggregate_type, events.c.aggregate_id,
                           events.c.route)
                    .where(events.c.seq > cursor).order_by(events.c.seq).limit(limit)
                ).all()
                if not rows:
                    continue
                now = utcnow()
                mine: list[tuple[int, str]] = []  # (seq, ordering key) of the events for this destination
                routed: list[int] = []
                lost: list[tuple[Any, ...]] = []
                for seq, event_type, aggregate_type, aggregate_id, route in rows:
                    key = f"{aggregate_type}:{aggregate_id}"[:320]
                    if route is None:
                        if target.matcher.match(event_type):
                            mine.append((seq, key))
                    elif route == target.name:
                        mine.append((seq, key))
                        routed.append(seq)
                    elif route not in self.configured:
                        lost.append((seq, route, key, DEAD, _unroutable(route), False))
                if routed:
                    mine = self._not_fanned_out(conn, target.name, mine, routed)
                # The first new delivery of a key with nothing pending is its head. The others go in
                # first; the check (which share-locks rows on PostgreSQL, see _PG_HELD_KEYS) comes
                # last, so records of those keys wait for as short a time as possible.
                first: dict[str, int] = {}
                rest: list[tuple[Any, ...]] = []
                for seq, key in mine:
                    if key in first:
                        rest.append((seq, target.name, key, PENDING, None, False))
                    else:
                        first[key] = seq
                if rest or lost:
                    self._insert_deliveries(conn, [*rest, *lost], now)
                if first:
                    held = self._held_keys(conn, target.name, set(first), cursor)
                    self._insert_deliveries(conn, [(seq, target.name, key, PENDING, None, key not in held)
                                                   for key, seq in first.items()], now)
                if mine and self.db.is_postgres:  # wake the workers of every relay process at commit
                    conn.exec_driver_sql("SELECT pg_notify(%s, 'deliveries ' || current_schema())", (_CHANNEL,))
                conn.execute(update(destination_state).where(destination_state.c.name == target.name)
                             .values(fanout_cursor=rows[-1].seq, updated_at=now))
                total += len(mine)
        if total and self.db.is_postgres:
            self._maybe_analyze(total)
        return total

    def _not_fanned_out(self, conn: Any, name: str, mine: list[tuple[int, str]],
                        routed: list[int]) -> list[tuple[int, str]]:
        """``mine`` without the routed events that already have a delivery to ``name``: the dead
        letters an unroutable route left under that name before the destination was configured.
        Dropped here rather than by ON CONFLICT, or a skipped first event of a key would leave the
        key's next delivery without its ``head`` flag."""
        done = set(conn.execute(select(deliveries.c.event_seq).where(
            deliveries.c.destination == name, deliveries.c.event_seq.in_(routed))).scalars())
        return [m for m in mine if m[0] not in done] if done else mine

    def _held_keys(self, conn: Any, name: str, keys: set[str], cursor: int) -> set[str]:
        """Which of ``keys`` have a pending delivery to ``name`` from before this fan-out (up to
        ``cursor``): their new rows are not heads.

        SQLite has one writer, so a plain read is exact. PostgreSQL: see :data:`_PG_HELD_KEYS`.
        """
        if self.db.is_postgres:
            return set(conn.exec_driver_sql(_PG_HELD_KEYS, (sorted(keys), name, cursor)).scalars())
        held: set[str] = set()
        listed = sorted(keys)
        for i in range(0, len(listed), 500):
            held.update(conn.execute(select(deliveries.c.ordering_key).distinct().where(
                deliveries.c.destination == name, deliveries.c.status == PENDING, deliveries.c.event_seq <= cursor,
                deliveries.c.ordering_key.in_(listed[i:i + 500]))).scalars())
        return held

    def _insert_deliveries(self, conn: Any, rows: list[tuple[Any, ...]], now: datetime) -> None:
        # ON CONFLICT DO NOTHING: the fan-out of every destination writes the dead letters of the
        # unroutable events it reads; the first one stores them
        if self.db.is_postgres:
            conn.exec_driver_sql(_PG_FANOUT, (now, now, now, *_columns(rows)))
        else:
            same = dict(zip(_FANOUT_SAME, (0, now, now, now), strict=True))
            conn.execute(self._insert_ignore(deliveries),
                         [{**dict(zip(_DELIVERY_COLS, r, strict=True)), **same} for r in rows])

    def _insert_ignore(self, table: Any) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING on either backend."""
        dialect = pg_dialect if self.db.is_postgres else sqlite_dialect
        return dialect.insert(table).on_conflict_do_nothing()

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
        with self.db.write() as conn:
            rows = self._claim_pg(conn, wanted, limit, now) if self.db.is_postgres else \
                self._claim_sqlite(conn, wanted, limit, now)
        rows.sort(key=itemgetter(5))  # event seq
        # unpacked by position: a Row's attribute lookup by name cost more than the Claim itself
        return [Claim(did, dest, attempts, created, OutboxEvent(seq, eid, etype, atype, aid, ev_at, payload, corr))
                for did, dest, _key, attempts, created, seq, eid, etype, atype, aid, ev_at, payload, corr, *_ in rows]

    def _claim_pg(self, conn: Any, wanted: list[str], limit: int, now: datetime) -> list[Any]:
        """One statement, one round trip: heads (row-locked, SKIP LOCKED), their runs, the lease.

        The head scan walks ``ix_deliveries_pending_head`` (pending rows flagged ``head``, in
        ``event_seq`` order), so neither the delivered history nor a held key's followers cost
        anything; each candidate's "no earlier pending delivery of its key" probe is one lookup in
        ``ix_deliveries_pending_key``. A run is read per head
        with a LATERAL index range scan of the same index instead of a window over every pending
        row of the claimed keys.
        """
        until = utcnow() + timedelta(seconds=self.config.lease_seconds)
        return list(conn.exec_driver_sql(_PG_CLAIM, {
            "names": wanted, "now": now, "limit": limit, "follow": max(0, self.config.run_length - 1),
            "owner": self.owner, "until": until}).all())

    def _claim_sqlite(self, conn: Any, wanted: list[str], limit: int, now: datetime) -> list[Any]:
        """SQLite: ``BEGIN IMMEDIATE`` makes this the only claimer, so select-then-update is exact."""
        d = deliveries.alias("d")
        columns = (d.c.id, d.c.destination, d.c.ordering_key, d.c.attempts, d.c.created_at, events.c.seq,
                   events.c.id.label("event_id"), events.c.event_type, events.c.aggregate_type, events.c.aggregate_id,
                   events.c.created_at.label("ev_at"), events.c.payload, events.c.correlation_id)
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
        # The heads come by ix_deliveries_pending_head. A partial index serves only a query that
        # spells its terms, so 'pending' is inlined, not bound (and head renders "= 1"); and without
        # statistics SQLite preferred the equality on destination and status of ix_deliveries_due,
        # reading every due pending row: the unary + takes destination out of index use (SQLite's
        # documented manual control of query plans).
        q = (
            select(*columns)
            .join(events, events.c.seq == d.c.event_seq)
            .where(literal_column(f"+{d.name}.destination").in_(active),
                   d.c.status == literal(PENDING, literal_execute=True), d.c.head,
                   d.c.next_attempt_at <= now,
                   or_(d.c.claimed_until.is_(None), d.c.claimed_until < now), ~exists(earlier))
            .order_by(d.c.event_seq)
            .limit(limit)
        )
        heads = list(conn.execute(q).all())
        if not heads:
            return []
        until = utcnow() + timedelta(seconds=self.config.lease_seconds)
        conn.execute(update(deliveries).where(deliveries.c.id.in_([r.id for r in heads]))
                     .values(claimed_by=self.owner, claimed_until=until))
        return heads + self._runs(conn, heads, columns, now) if self.config.run_length > 1 else heads

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
        # "due" is decided in SQL: SQLite returns timestamps as text, and parsing two more per row
        # cost more than the rest of the claim
        due = and_(d.c.next_attempt_at <= now, or_(d.c.claimed_until.is_(None), d.c.claimed_until < now))
        q = (select(*columns, due.label("due"))
             .join(events, events.c.seq == d.c.event_seq)
             .join(ranked, ranked.c.id == d.c.id)
             .where(ranked.c.rn > 1, ranked.c.rn <= self.config.run_length)
             .order_by(d.c.destination, d.c.ordering_key, d.c.event_seq))
        out: list[Any] = []
        stopped: set[tuple[str, str]] = set()
        for r in conn.execute(q).all():
            k = (r[1], r[2])  # destination, ordering key
            if k not in mine or k in stopped:
                continue
            if not r[-1]:
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
        """Deliver claimed events and record the outcomes: each destination gets its share of the
        batch in one ``deliver_many`` call (in ``event_seq`` order).

        Once an event of a key fails and will be retried, the rest of that key's claims in this
        batch are released (``None``), even those a pipelining destination already sent: order
        per key outlives the batch, and they go again after the failed one (same event id).
        """
        outcomes: list[Outcome | None] = [None] * len(claims)
        share: dict[str, list[int]] = {}
        for i, c in enumerate(claims):
            share.setdefault(c.destination, []).append(i)
        with self._lease_kept([c.delivery_id for c in claims]):
            for name, idx in share.items():
                results = attempt_many(instances[name], [claims[i].event for i in idx])
                blocked: set[str] = set()
                for i, o in zip(idx, results, strict=True):
                    key = claims[i].event.ordering_key
                    if key in blocked:
                        continue
                    if o is None or (not o.delivered and not self._will_die(claims[i], o)):
                        blocked.add(key)
                    outcomes[i] = o
        self.record(claims, outcomes)
        return outcomes

    @contextmanager
    def _lease_kept(self, ids: list[int]) -> Iterator[None]:
        """Renew the lease every half lease while a batch is out: a slow far side (timeouts on
        every head) must not let it lapse mid-batch, or another relay would deliver it again."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.config.lease_seconds / 2):
                try:
                    self._renew(ids)
                except Exception:  # noqa: BLE001 - the next renewal or the lease expiry covers it
                    log.exception("lease renewal failed")

        t = threading.Thread(target=renew, name="relay-lease", daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()

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
        a ``None`` outcome releases the claim untried. Then flag the new head of every key
        whose head left ``pending`` (a statement of its own: see :data:`_PG_PROMOTE`)."""
        now = utcnow()
        attempt_rows: list[tuple[Any, ...]] = []
        delivered: dict[int | None, list[int]] = {}  # status code -> delivery ids (the common case)
        failed: list[tuple[Any, ...]] = []  # retried or dead
        released: list[int] = []
        done_keys: set[tuple[str, str]] = set()
        for c, o in zip(claims, outcomes, strict=True):
            if o is None:
                released.append(c.delivery_id)
                continue
            outcome = "delivered"
            if o.delivered:
                delivered.setdefault(o.status_code, []).append(c.delivery_id)
            else:
                outcome, row = self._failed(c, o, now)
                failed.append(row)
            if outcome != "retry":
                done_keys.add((c.destination, c.event.ordering_key))
            attempt_rows.append((c.delivery_id, now - timedelta(milliseconds=o.duration_ms), o.duration_ms, outcome,
                                 o.status_code, _cut(o.error), _cut(o.response)))
        with self.db.write() as conn:
            if self.db.is_postgres:
                self._record_pg(conn, delivered, failed, attempt_rows, released, now)
                if done_keys:
                    conn.exec_driver_sql(_PG_PROMOTE, _columns(sorted(done_keys)))
            else:
                self._record_sqlite(conn, delivered, failed, attempt_rows, released, now)
                if done_keys:
                    conn.execute(text(_SQLITE_PROMOTE), [{"destination": d, "ordering_key": k} for d, k in done_keys])

    def _failed(self, c: Claim, o: Outcome, now: datetime) -> tuple[str, tuple[Any, ...]]:
        """The attempt's outcome ("dead" or "retry") and the ``_PG_RECORD`` row of a failed delivery."""
        # attempts is exact: the claim (our lease) kept everyone else off these rows
        attempts = c.attempts + 1
        error = o.error or "delivery failed"
        dead_reason = self._will_die(c, o, now)
        if dead_reason is not None:
            if not o.permanent:
                error = f"{error} ({dead_reason})"
            return "dead", (c.delivery_id, DEAD, attempts, now, _cut(error), o.status_code)
        wait = self.backoff(attempts)
        if o.retry_after is not None:
            wait = max(wait, o.retry_after)
        return "retry", (c.delivery_id, PENDING, attempts, now + timedelta(seconds=wait), _cut(error), o.status_code)

    def _record_pg(self, conn: Any, delivered: dict[int | None, list[int]], failed: list[tuple[Any, ...]],
                   attempt_rows: list[tuple[Any, ...]], released: list[int], now: datetime) -> None:
        # one statement each over arrays: per-row executemany cost more than the updates
        for code, ids in delivered.items():
            conn.exec_driver_sql(_PG_DELIVERED, (now, now, code, ids, self.owner))
        if failed:
            conn.exec_driver_sql(_PG_RECORD, (now, *_columns(failed), self.owner))
        if attempt_rows:
            conn.exec_driver_sql(_PG_ATTEMPTS, _columns(attempt_rows))
        if released:
            conn.exec_driver_sql(_PG_RELEASE, (released, self.owner))

    def _record_sqlite(self, conn: Any, delivered: dict[int | None, list[int]], failed: list[tuple[Any, ...]],
                       attempt_rows: list[tuple[Any, ...]], released: list[int], now: datetime) -> None:
        ours = or_(deliveries.c.claimed_by == self.owner, deliveries.c.claimed_by.is_(None))
        for code, ids in delivered.items():
            for i in range(0, len(ids), 1000):  # one UPDATE, not one per row: no per-row parameters
                conn.execute(update(deliveries).where(deliveries.c.id.in_(ids[i:i + 1000]), ours).values(
                    status=DELIVERED, attempts=deliveries.c.attempts + 1, delivered_at=now, updated_at=now,
                    claimed_by=None, claimed_until=None, last_error=None, last_status_code=code))
        if failed:
            conn.execute(update(deliveries).where(deliveries.c.id == bindparam("b_id"), ours).values(
                status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                next_attempt_at=bindparam("b_next", type_=deliveries.c.next_attempt_at.type), updated_at=now,
                claimed_by=None, claimed_until=None, last_error=bindparam("b_error"),
                last_status_code=bindparam("b_code")),
                [dict(zip(("b_id", "b_status", "b_attempts", "b_next", "b_error", "b_code"), m, strict=True))
                 for m in failed])
        if attempt_rows:
            conn.execute(insert(delivery_attempts), [dict(zip(_ATTEMPT_COLS, a, strict=True)) for a in attempt_rows])
        if released:
            conn.execute(update(deliveries).where(deliveries.c.id.in_(released), deliveries.c.claimed_by == self.owner)
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
        self._watch_commits(True)
        self._threads = [threading.Thread(target=self._fanout_loop, name="relay-fanout", daemon=True)]
        self._threads += [threading.Thread(target=self._work_loop, name=f"relay-{i}", daemon=True)
                          for i in range(self.config.workers)]
        if self.db.is_postgres:
            self._threads.append(threading.Thread(target=self._listen_loop, name="relay-listen", daemon=True))
        for t in self._threads:
            t.start()
        log.info("relay started", extra={"destinations": sorted(self.targets), "workers": self.config.workers})

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._fanout_due.set()
        self._wake_workers(everyone=True)
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        self._watch_commits(False)
        log.info("relay stopped")

    # -- wake-ups -------------------------------------------------------------

    def _watch_commits(self, on: bool) -> None:
        """Wake the fan-out when a transaction of this process that inserted events commits."""
        for name, hook in self._hooks:
            if on and not event.contains(self.db.engine, name, hook):
                event.listen(self.db.engine, name, hook)
            elif not on and event.contains(self.db.engine, name, hook):
                event.remove(self.db.engine, name, hook)

    def _commit_seen(self, conn: Any) -> None:
        if conn.info.get(_WROTE_EVENTS):
            self._fanout_due.set()

    def _wake_workers(self, everyone: bool = False) -> None:
        """Wake one idle worker (it wakes the next once its claim found work), or all of them:
        waking every worker of every process for each fan-out made them race for one batch."""
        with self._work_due:
            self._work_gen += 1
            if everyone:
                self._work_due.notify_all()
            else:
                self._work_due.notify()

    def _listen_loop(self) -> None:
        """PostgreSQL LISTEN: events committed by any process wake the fan-out, deliveries fanned
        out by any relay process wake the workers (see migration 0004's trigger)."""
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    schema = conn.execute("SELECT current_schema()").fetchone()
                    conn.execute(f"LISTEN {_CHANNEL}")
                    ours = {f"events {schema[0] if schema else ''}": self._fanout_due.set,
                            f"deliveries {schema[0] if schema else ''}": self._wake_workers}
                    self._fanout_due.set()  # catch up on what committed while nobody listened
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            wake = ours.get(note.payload)
                            if wake is not None:
                                wake()
            except psycopg.Error as exc:
                log.warning("relay LISTEN connection failed; polling meanwhile", extra={"error": str(exc)})
                self._stop.wait(max(1.0, self.config.poll_seconds))

    # -- loops ----------------------------------------------------------------

    def _fanout_loop(self) -> None:
        while not self._stop.is_set():
            self._fanout_due.clear()
            try:
                n = self.fanout()
                if n:
                    self._wake_workers()
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
                self._fanout_due.wait(self.config.poll_seconds)

    def _work_loop(self) -> None:
        instances = self.open_instances()
        idle = 0  # empty claims in a row
        try:
            while not self._stop.is_set():
                seen = self._work_gen
                try:
                    claims = self.claim()
                    n = len(claims)
                    if n and len({(c.destination, c.event.ordering_key) for c in claims}) >= self.config.batch_size:
                        # as many heads as asked for: more may be due, so bring in a colleague now.
                        # After a smaller batch nobody is woken: every claimable head was taken, and
                        # a colleague woken for nothing made an empty claim per batch (per process)
                        self._wake_workers()
                    if n:
                        self.deliver(claims, instances)
                except BridgeError as exc:
                    log.error("delivery batch failed; its claims return when the lease expires",
                              extra={"error": str(exc)})
                    n = 0
                except Exception:  # noqa: BLE001 - the worker loop must never die
                    log.exception("delivery batch crashed; its claims return when the lease expires")
                    n = 0
                if n:
                    idle = 0
                    continue
                # New deliveries wake us; what polling still finds is time-driven (a retry come
                # due, a dead relay's lease expired), so an idle worker polls ever less often, up
                # to _IDLE_POLLS intervals: an empty claim still visits the heads held by others.
                idle = min(idle + 1, _IDLE_POLLS)
                with self._work_due:
                    if self._work_gen == seen and not self._stop.is_set():
                        self._work_due.wait(self.config.poll_seconds * idle)
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
        out[name] = _status_row(name, paused=bool(st.paused) if st else False,
                                paused_reason=st.paused_reason if st else None,
                                fanout_lag=head - (st.fanout_cursor if st else 0), retrying=retrying.get(name, 0))
    for dest, status, count, attempts, oldest in agg:
        row = out.setdefault(dest, _status_row(dest))
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


def _status_row(name: str, *, paused: bool = False, paused_reason: str | None = None, fanout_lag: int | None = None,
                retrying: int = 0) -> dict[str, Any]:
    """A :func:`destination_status` row before the delivery counts; the defaults are those of a
    name with deliveries but neither configuration nor state (an unroutable route's dead letters)."""
    return {"name": name, "paused": paused, "paused_reason": paused_reason, "fanout_lag": fanout_lag,
            "backlog": 0, "oldest_pending_seconds": None, "retrying": retrying,
            "attempts": 0, "dead": 0, "delivered": 0}


def _set_paused(db: Database, name: str, paused: bool, reason: str | None, actor: str) -> None:
    now = utcnow()
    with db.write() as conn:
        n = conn.execute(update(destination_state).where(destination_state.c.name == name)
                         .values(paused=paused, paused_reason=reason if paused else None, updated_at=now)).rowcount
        if not n:
            conn.execute(insert(destination_state).values(name=name, fanout_cursor=0, paused=paused,
                                                          paused_reason=reason if paused else None, updated_at=now))
        audit(conn, actor, "destinations.pause" if paused else "destinations.resume", name, reason, {})


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
            ev.append(events.c.event_type.like(like_escape(event_type).replace("*", "%"),
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
            "%:" + like_escape(key), escape="\\")))
    if len(ev) > 1:
        cond.append(exists(select(events.c.seq).where(*ev)))
    now = utcnow()
    with db.write() as conn:
        n = conn.execute(update(deliveries).where(*cond).values(
            status=PENDING, attempts=0, next_attempt_at=now, claimed_by=None, claimed_until=None,
            last_error=None, delivered_at=None, created_at=now, updated_at=now,
            head=True)).rowcount  # maybe the first pending of its key again: the claim checks
        audit(conn, actor, "destinations.replay", destination, reason,
               {"type": event_type, "key": key, "since": since, "until": until, "status": status, "count": n})
    return int(n or 0)

