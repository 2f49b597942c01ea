"""Writing records and their outbox events inside the caller's transaction.

:func:`write_records` upserts canonical records by (type, natural key) and
emits one event per actual change: ``<prefix>.recorded`` for a new record,
``<prefix>.updated`` when its content changed, nothing when a replay or a
reprocess brings the same content again. That is what makes reprocessing
idempotent: no duplicate records, no duplicate events.

Event ids are UUIDs: the idempotency key every destination receives. The
caller's transaction must hold the events lock (:meth:`Database.lock_events`)
taken right before the insert, so ``seq`` order is commit order (see
``bridge.db.tables``); :func:`write_records` takes it itself.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, update

from bridge.db import Database, utcnow
from bridge.db.tables import records
from mappings.base import EventDraft
from mappings.canonical import CanonicalRecord

__all__ = ["Origin", "Stamp", "WriteResult", "write_events", "write_records"]

_KEY_CHUNK = 500
_SQLITE_MAX_ROWID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from: carried into the record row and the event payload."""

    channel: str | None = None
    inbound_id: int | None = None
    message_index: int | None = None
    file_name: str | None = None
    correlation_id: str | None = None


@dataclass(slots=True)
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    events: int = 0
    #: inserted + updated records, and events, by the origin's inbound id (a group of files shares one write)
    records_by_inbound: Counter[int | None] = field(default_factory=Counter)
    events_by_inbound: Counter[int | None] = field(default_factory=Counter)


def _envelope(event_id: str, event_type: str, created_at: str, aggregate_type: str, aggregate_id: str,
              body_key: str, body: Any, origin: Origin, extra: dict[str, Any] | None = None) -> str:
    doc: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        "created_at": created_at,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "correlation_id": origin.correlation_id,
        "source": {"channel": origin.channel, "inbound_id": origin.inbound_id, "message": origin.message_index},
    }
    if extra:
        doc.update(extra)
    doc[body_key] = body
    return orjson.dumps(doc).decode()


def write_records(
    db: Database,
    conn: Connection,
    items: Sequence[tuple[CanonicalRecord, Origin]],
    *,
    drafts: Sequence[tuple[EventDraft, Origin]] = (),
) -> WriteResult:
    """Upsert ``items`` and insert the events of what changed, plus ``drafts``, in ``conn``'s transaction."""
    result = WriteResult()
    now = utcnow()
    stamp = Stamp(now)
    # last one wins within a batch, as it would across batches
    latest: dict[tuple[str, str], tuple[CanonicalRecord, Origin, bytes, str]] = {}
    for record, origin in items:
        data = record.__pydantic_serializer__.to_json(record)
        key = record.natural_key()
        latest[(record.record_type, key)] = (record, origin, data, hashlib.sha1(data).hexdigest())

    by_type: dict[str, list[str]] = {}
    for rtype, key in latest:
        by_type.setdefault(rtype, []).append(key)
    existing: dict[tuple[str, str], tuple[int, str, int]] = {}
    for rtype, keys in by_type.items():
        for rid, key, content_hash, version in _select_keys(conn, rtype, keys, with_hash=True):
            existing[(rtype, key)] = (rid, content_hash, version)

    new_rows: list[tuple[Any, ...]] = []
    new_meta: list[tuple[CanonicalRecord, Origin, bytes]] = []
    changed_rows: list[dict[str, Any]] = []
    changed_meta: list[tuple[CanonicalRecord, Origin, bytes, int]] = []
    ts = stamp.for_db(db)
    for (rtype, key), (record, origin, data, digest) in latest.items():
        hit = existing.get((rtype, key))
        if hit is None:
            new_rows.append((rtype, key, data.decode(), digest, 1, origin.inbound_id, origin.message_index,
                             origin.correlation_id, ts, ts))
            new_meta.append((record, origin, data))
        elif hit[1] != digest:
            changed_rows.append({
                "b_id": hit[0], "data": data.decode(), "content_hash": digest, "version": hit[2] + 1,
                "inbound_id": origin.inbound_id, "message_index": origin.message_index,
                "correlation_id": origin.correlation_id, "updated_at": now,
            })
            changed_meta.append((record, origin, data, hit[0]))
        else:
            result.unchanged += 1

    event_rows: list[tuple[Any, ...]] = []
    if new_rows:
        new_ids = _insert_records(db, conn, new_rows)
        for new, rid, (record, origin, data) in zip(new_rows, new_ids, new_meta, strict=True):
            event_rows.append(_record_event(record, new[1], origin, data, rid, "recorded", 1, stamp, ts))
        result.inserted = len(new_rows)
        result.records_by_inbound.update(new[5] for new in new_rows)
    if changed_rows:
        conn.execute(
            update(records).where(records.c.id == bindparam("b_id")).values(
                data=bindparam("data"), content_hash=bindparam("content_hash"), version=bindparam("version"),
                inbound_id=bindparam("inbound_id"), message_index=bindparam("message_index"),
                correlation_id=bindparam("correlation_id"), updated_at=bindparam("updated_at"),
            ),
            changed_rows,
        )
        for row, (record, origin, data, rid) in zip(changed_rows, changed_meta, strict=True):
            event_rows.append(_record_event(record, record.natural_key(), origin, data, rid, "updated",
                                            row["version"], stamp, ts))
        result.updated = len(changed_rows)
        result.records_by_inbound.update(row["inbound_id"] for row in changed_rows)
    result.events_by_inbound.update(result.records_by_inbound)
    for draft, origin in drafts:
        result.events_by_inbound[origin.inbound_id] += 1
        if draft.prepare is not None:
            draft.prepare(conn)
        event_rows.append(_draft_event(draft, origin, stamp, ts))
    if event_rows:
        db.lock_events(conn)
        _insert_events(db, conn, event_rows)
    result.events = len(event_rows)
    return result


# -- the bulk statements ----------------------------------------------------
#
# The hot path talks to the driver directly (``exec_driver_sql``): SQLAlchemy's
# per-row parameter processing cost more than the inserts themselves. The
# values must then be what SQLAlchemy would have bound: on SQLite, UTC
# timestamps as naive "YYYY-MM-DD HH:MM:SS.ffffff" text (the format its
# DateTime type stores and parses back; strings also avoid sqlite3's default
# datetime adapter, deprecated in Python 3.12); on PostgreSQL, aware datetimes.
# PostgreSQL gets one INSERT ... SELECT FROM unnest(arrays) per batch instead
# of a row-by-row executemany.

_RECORD_COLS = ("type", "natural_key", "data", "content_hash", "version", "inbound_id", "message_index",
                "correlation_id", "created_at", "updated_at")
_RECORD_PG_TYPES = ("text", "text", "text", "text", "int", "bigint", "int", "text", "timestamptz", "timestamptz")
_EVENT_COLS = ("id", "event_type", "aggregate_type", "aggregate_id", "record_id", "inbound_id", "payload",
               "correlation_id", "created_at", "route")
_EVENT_PG_TYPES = ("text", "text", "text", "text", "bigint", "bigint", "text", "text", "timestamptz", "text")


def _pg_unnest_insert(table: str, cols: tuple[str, ...], types: tuple[str, ...], returning: str = "") -> str:
    # %b: binary arrays (psycopg's text array dumper escapes every quote of a JSON payload, slowly);
    # ORDER BY the ordinality so seq follows the batch's order (per-aggregate event order)
    arrays = ", ".join(f"%b::{t}[]" for t in types)
    names = ", ".join(cols)
    return (f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS u({names}, ord) ORDER BY ord{returning}")


_PG_INSERT_RECORDS = _pg_unnest_insert("records", _RECORD_COLS, _RECORD_PG_TYPES, " RETURNING id, type, natural_key")
_PG_INSERT_EVENTS = _pg_unnest_insert("events", _EVENT_COLS, _EVENT_PG_TYPES)
_SQLITE_INSERT_RECORDS = f"INSERT INTO records ({', '.join(_RECORD_COLS)}) VALUES ({', '.join('?' * len(_RECORD_COLS))})"
_SQLITE_INSERT_EVENTS = f"INSERT INTO events ({', '.join(_EVENT_COLS)}) VALUES ({', '.join('?' * len(_EVENT_COLS))})"


class Stamp:
    """One batch's timestamp, formatted once for the payload and for each backend."""

    __slots__ = ("now", "iso", "sqlite")

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.iso = now.isoformat()
        self.sqlite = now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def for_db(self, db: Database) -> Any:
        return self.now if db.is_postgres else self.sqlite


def _select_keys(conn: Connection, rtype: str, keys: list[str], *, with_hash: bool) -> list[tuple[Any, ...]]:
    """(id, natural_key[, content_hash, version]) of the existing records of ``rtype`` among ``keys``."""
    cols = "id, natural_key, content_hash, version" if with_hash else "id, natural_key"
    pg = conn.dialect.name == "postgresql"
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i : i + _KEY_CHUNK]
        if pg:
            sql = f"SELECT {cols} FROM records WHERE type = %s AND natural_key = ANY(%s::text[])"
            params: tuple[Any, ...] = (rtype, chunk)
        else:
            sql = f"SELECT {cols} FROM records WHERE type = ? AND natural_key IN ({', '.join('?' * len(chunk))})"
            params = (rtype, *chunk)
        out.extend(conn.exec_driver_sql(sql, params).all())
    return out


def _insert_records(db: Database, conn: Connection, rows: list[tuple[Any, ...]]) -> list[int]:
    """Insert new record rows (distinct (type, natural_key)); return their ids, in the rows' order."""
    if db.is_postgres:
        ids = {(rtype, key): rid for rid, rtype, key in
               conn.exec_driver_sql(_PG_INSERT_RECORDS, tuple(list(c) for c in zip(*rows, strict=True)))}
        return [ids[(row[0], row[1])] for row in rows]
    # executemany without RETURNING (row-by-row RETURNING costs far more on SQLite). The ids
    # are then known without reading them back: ``id`` is the rowid, and SQLite gives a new
    # row the largest rowid plus one while that is below 2**63 - 1 (https://sqlite.org/autoinc.html),
    # so one statement's rows, inside the write transaction that holds the database's lock,
    # are numbered consecutively up to last_insert_rowid().
    conn.exec_driver_sql(_SQLITE_INSERT_RECORDS, rows)
    last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
    if last < _SQLITE_MAX_ROWID:
        return list(range(last - len(rows) + 1, last + 1))
    # at the rowid ceiling SQLite picks rowids at random: read them back
    by_type: dict[str, list[str]] = {}
    for row in rows:
        by_type.setdefault(row[0], []).append(row[1])
    found: dict[tuple[str, str], int] = {}
    for rtype, keys in by_type.items():
        for rid, key in _select_keys(conn, rtype, keys, with_hash=False):
            found[(rtype, key)] = rid
    return [found[(row[0], row[1])] for row in rows]


def _insert_events(db: Database, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    if db.is_postgres:
        conn.exec_driver_sql(_PG_INSERT_EVENTS, tuple(list(c) for c in zip(*rows, strict=True)))
    else:
        conn.exec_driver_sql(_SQLITE_INSERT_EVENTS, rows)


#: the random bits of event ids: seeded from os.urandom, and reseeded in a forked child so no two
#: processes share a sequence. One getrandbits instead of an os.urandom system call per event
#: (9 us of the ~12 us an id cost; ids are unique keys, not secrets).
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def new_event_id() -> str:
    """A time-ordered UUID (version 7 layout, RFC 9562): unique, and sorted by creation time,
    so the events' unique index grows at its right edge instead of at random pages."""
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(74)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    # the canonical 8-4-4-4-12 text form, as str(uuid.UUID(int=value)) gives, without the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _record_event(record: CanonicalRecord, key: str, origin: Origin, data: bytes, record_id: int, verb: str,
                  version: int, stamp: Stamp, ts: Any) -> tuple[Any, ...]:
    """The event row of one record change; its payload embeds the record's JSON bytes as they are."""
    event_id = new_event_id()
    event_type = f"{record.event_prefix}.{verb}"
    agg_id = record.aggregate_id()
    payload = _envelope(event_id, event_type, stamp.iso, record.aggregate_type, agg_id, "record",
                        orjson.Fragment(data), origin,
                        {"record_type": record.record_type, "natural_key": key, "record_id": record_id,
                         "version": version})
    return (event_id, event_type, record.aggregate_type, agg_id[:255], record_id, origin.inbound_id, payload,
            origin.correlation_id, ts, None)


def _draft_event(draft: EventDraft, origin: Origin, stamp: Stamp, ts: Any) -> tuple[Any, ...]:
    event_id = new_event_id()
    payload = _envelope(event_id, draft.event_type, stamp.iso, draft.aggregate_type, draft.aggregate_id, "data",
                        draft.payload, origin)
    return (event_id, draft.event_type, draft.aggregate_type, draft.aggregate_id[:255], None, origin.inbound_id,
            payload, origin.correlation_id, ts, draft.route and draft.route[:64])


def write_events(db: Database, conn: Connection, drafts: Sequence[tuple[EventDraft, Origin]]) -> int:
    """Insert events that are not record changes (ACKs, outbound files) in ``conn``'s transaction."""
    return write_records(db, conn, (), drafts=drafts).events
