"""``GET /v1/traces/{id}``: the hops of a file, message, record or event from landing to delivery.

``id`` is resolved, in this order:

1. an explicit kind prefix: ``inbound:<id>``, ``record:<id>``, ``event:<uuid or seq>``,
   ``correlation:<id>`` (use it when a correlation id could be read as something else);
2. a UUID: an event id;
3. a correlation id found on inbound files, records or events (the
   ``X-Correlation-ID`` a client sent, or the one bridge created on landing);
4. digits: an inbound file id.

From there the trace gathers what belongs together: an inbound file's records
and events, a record's file and events, an event's record and file, and the
deliveries of every event with each attempt. The answer is a list of hops in
time order, each with when it happened, seconds since the first hop, and an
outcome: ``landed`` (the durability point), ``processed`` (the file's commit,
with message and failure counts), ``failed`` (a quarantined message: category
and reason, never content), ``record``, ``event``, ``delivery`` (status and
attempts). Record contents are not part of a trace (``/v1/records`` serves them
with PHI masking); at most :data:`MAX_PER_KIND` records and events are listed,
with ``truncated`` set when there are more. Needs ``ops:read``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from bridge.api.deps import DbDep, OpsReader
from bridge.api.problems import Problem, responses
from bridge.db.tables import deliveries, delivery_attempts, events, failures, inbound_files, records

__all__ = ["HopPublic", "TracePublic", "router"]

router = APIRouter(prefix="/traces", tags=["operations"])

MAX_PER_KIND = 100
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PREFIXES = ("inbound", "record", "event", "correlation")

HopKind = Literal["landed", "processed", "failed", "record", "event", "delivery"]


class AttemptPublic(BaseModel):
    started_at: datetime
    duration_ms: float
    outcome: str = Field(examples=["delivered"])
    status_code: int | None = None
    error: str | None = None


class HopPublic(BaseModel):
    """One step of the flow."""

    kind: HopKind
    at: datetime = Field(description="when this hop happened")
    elapsed_seconds: float = Field(description="seconds since the trace's first hop")
    ref: str = Field(description="what the hop is about", examples=["inbound:12", "record:7", "event:3f2c...",
                                                                     "delivery:5"])
    outcome: str = Field(description="status of the hop", examples=["processed", "delivered", "pending"])
    detail: dict[str, Any] = Field(default_factory=dict, description="kind-specific facts (counts, type, "
                                                                     "destination, error category)")
    attempts: list[AttemptPublic] | None = Field(None, description="delivery attempts (delivery hops only)")


class TracePublic(BaseModel):
    id: str = Field(description="the id asked for")
    resolved_as: Literal["inbound", "record", "event", "correlation"]
    correlation_ids: list[str] = Field(description="correlation ids met along the trace")
    hops: list[HopPublic]
    drop_to_commit_seconds: float | None = Field(None, description="landed -> processed of the first file")
    commit_to_delivered_seconds: float | None = Field(
        None, description="the slowest event -> delivered, over delivered deliveries")
    truncated: bool = Field(False, description=f"more than {MAX_PER_KIND} records or events; the first are listed")

    model_config = {"json_schema_extra": {"examples": [{
        "id": "inbound:12", "resolved_as": "inbound", "correlation_ids": ["5b0e8f9c2d7a4e1f9a3b6c8d0e2f4a6b"],
        "hops": [{"kind": "landed", "at": "2026-11-26T08:00:00Z", "elapsed_seconds": 0.0, "ref": "inbound:12",
                  "outcome": "landed", "detail": {"channel": "cabinets", "name": "export.csv"}},
                 {"kind": "processed", "at": "2026-11-26T08:00:01Z", "elapsed_seconds": 1.0, "ref": "inbound:12",
                  "outcome": "processed", "detail": {"messages": 1, "records": 1, "failures": 0}}],
        "drop_to_commit_seconds": 1.0, "commit_to_delivered_seconds": None, "truncated": False}]}}


def _not_found(id_: str) -> Problem:
    return Problem(404, f"nothing to trace for {id_!r}: no inbound file, record, event or correlation id matches "
                   "(prefix with inbound:, record:, event: or correlation: to say which)",
                   slug="not-found", title="Not found")


class _Gather:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.files: dict[int, Any] = {}
        self.records: dict[int, Any] = {}
        self.events: dict[int, Any] = {}
        self.truncated = False

    def _add(self, target: dict[int, Any], rows: Sequence[Any], key: str) -> None:
        for r in rows:
            if len(target) >= MAX_PER_KIND:
                self.truncated = True
                return
            target.setdefault(getattr(r, key), r)

    def files_where(self, *cond: Any) -> None:
        self._add(self.files, self.conn.execute(select(inbound_files).where(*cond)
                                                .order_by(inbound_files.c.id).limit(MAX_PER_KIND + 1)).all(), "id")

    def records_where(self, *cond: Any) -> None:
        cols = [c for c in records.c if c.name != "data"]
        self._add(self.records, self.conn.execute(select(*cols).where(*cond)
                                                  .order_by(records.c.id).limit(MAX_PER_KIND + 1)).all(), "id")

    def events_where(self, *cond: Any) -> None:
        cols = [c for c in events.c if c.name != "payload"]
        self._add(self.events, self.conn.execute(select(*cols).where(*cond)
                                                 .order_by(events.c.seq).limit(MAX_PER_KIND + 1)).all(), "seq")


def _resolve(g: _Gather, id_: str) -> str:
    """Fill ``g`` with the roots ``id_`` names; returns how it was read."""
    kind, sep, value = id_.partition(":")
    if not sep or kind not in _PREFIXES:
        kind, value = "", id_
    if kind == "event" or (not kind and _UUID.fullmatch(value)):
        cond = events.c.seq == int(value) if value.isdigit() else events.c.id == value.lower()
        g.events_where(cond)
        if g.events:
            return "event"
        if kind:
            raise _not_found(id_)
    if kind in ("record", "inbound"):
        where, column, found = ((g.records_where, records.c.id, g.records) if kind == "record"
                                else (g.files_where, inbound_files.c.id, g.files))
        if value.isdigit():
            where(column == int(value))
        if not found:
            raise _not_found(id_)
        return kind
    if kind in ("", "correlation") and len(value) <= 64:
        g.files_where(inbound_files.c.correlation_id == value)
        g.records_where(records.c.correlation_id == value)
        g.events_where(events.c.correlation_id == value)
        if g.files or g.records or g.events:
            return "correlation"
    if not kind and value.isdigit():
        g.files_where(inbound_files.c.id == int(value))
        if g.files:
            return "inbound"
    raise _not_found(id_)


def _expand(g: _Gather) -> None:
    """Add what belongs to the roots: files' records and events, records' files and events, events' records."""
    file_ids = list(g.files)
    if file_ids:
        g.records_where(records.c.inbound_id.in_(file_ids))
        g.events_where(events.c.inbound_id.in_(file_ids))
    record_ids = list(g.records)
    if record_ids:
        g.events_where(events.c.record_id.in_(record_ids))
    missing_records = {e.record_id for e in g.events.values() if e.record_id is not None} - set(g.records)
    if missing_records:
        g.records_where(records.c.id.in_(sorted(missing_records)))
    missing_files = ({r.inbound_id for r in g.records.values() if r.inbound_id is not None}
                     | {e.inbound_id for e in g.events.values() if e.inbound_id is not None}) - set(g.files)
    if missing_files:
        g.files_where(inbound_files.c.id.in_(sorted(missing_files)))


@router.get("/{id}", response_model=TracePublic, summary="Trace a file, record, event or correlation id",
            description="The hops from landing to delivery, with timings and outcomes. `id` is `inbound:<id>`, "
                        "`record:<id>`, `event:<uuid|seq>`, `correlation:<id>`, or unprefixed: an event UUID, "
                        "else a correlation id, else (digits) an inbound file id. Needs `ops:read`.",
            responses=responses(401, 403, 404, 422, 429))
def get_trace(
    id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$", description="what to trace",
                            examples=["inbound:12", "erp-batch-42", "0190f3b2-7c1e-7a00-8000-0123456789ab"])],
    client: OpsReader,
    db: DbDep,
) -> TracePublic:
    with db.read() as conn:
        g = _Gather(conn)
        resolved = _resolve(g, id)
        _expand(g)
        seqs = sorted(g.events)
        dels = conn.execute(select(deliveries).where(deliveries.c.event_seq.in_(seqs))
                            .order_by(deliveries.c.id)).all() if seqs else []
        attempts: dict[int, list[AttemptPublic]] = {}
        if dels:
            for a in conn.execute(select(delivery_attempts)
                                  .where(delivery_attempts.c.delivery_id.in_([d.id for d in dels]))
                                  .order_by(delivery_attempts.c.id)).all():
                attempts.setdefault(a.delivery_id, []).append(AttemptPublic(
                    started_at=a.started_at, duration_ms=a.duration_ms, outcome=a.outcome,
                    status_code=a.status_code, error=a.error))
        fails = conn.execute(select(failures).where(failures.c.inbound_id.in_(list(g.files)))
                             .order_by(failures.c.id).limit(MAX_PER_KIND)).all() if g.files else []

    hops: list[dict[str, Any]] = []
    for f in g.files.values():
        hops.append({"kind": "landed", "at": f.received_at, "ref": f"inbound:{f.id}", "outcome": "landed",
                     "detail": {"channel": f.channel, "name": f.name, "size": f.size, "sha256": f.sha256}})
        if f.processed_at is not None:
            hops.append({"kind": "processed", "at": f.processed_at, "ref": f"inbound:{f.id}", "outcome": f.status,
                         "detail": {"messages": f.message_count, "records": f.record_count,
                                    "failures": f.failure_count}})
    for x in fails:
        hops.append({"kind": "failed", "at": x.created_at, "ref": f"failure:{x.id}", "outcome": x.status,
                     "detail": {"inbound_id": x.inbound_id, "message_index": x.message_index,
                                "category": x.category, "reason": x.reason}})
    for r in g.records.values():
        hops.append({"kind": "record", "at": r.updated_at, "ref": f"record:{r.id}",
                     "outcome": "created" if r.version == 1 else "updated",
                     "detail": {"type": r.type, "version": r.version, "inbound_id": r.inbound_id,
                                "message_index": r.message_index}})
    for e in g.events.values():
        hops.append({"kind": "event", "at": e.created_at, "ref": f"event:{e.id}", "outcome": "committed",
                     "detail": {"seq": e.seq, "type": e.event_type, "aggregate_id": e.aggregate_id,
                                "record_id": e.record_id}})
    slowest: float | None = None
    for d in dels:
        at = d.delivered_at or d.updated_at
        hops.append({"kind": "delivery", "at": at, "ref": f"delivery:{d.id}", "outcome": d.status,
                     "detail": {"destination": d.destination, "event_seq": d.event_seq, "attempts": d.attempts,
                                "last_error": d.last_error},
                     "attempts": attempts.get(d.id, [])})
        if d.delivered_at is not None:
            took = (d.delivered_at - g.events[d.event_seq].created_at).total_seconds()
            slowest = took if slowest is None else max(slowest, took)
    order = {"landed": 0, "processed": 1, "failed": 2, "record": 3, "event": 4, "delivery": 5}
    hops.sort(key=lambda h: (h["at"], order[h["kind"]]))
    first = hops[0]["at"] if hops else None
    for h in hops:
        h["elapsed_seconds"] = round((h["at"] - first).total_seconds(), 6) if first else 0.0
    first_file = next(iter(g.files.values()), None)
    drop = ((first_file.processed_at - first_file.received_at).total_seconds()
            if first_file is not None and first_file.processed_at is not None else None)
    corr = sorted({x.correlation_id for x in [*g.files.values(), *g.records.values(), *g.events.values()]
                   if x.correlation_id})
    return TracePublic(id=id, resolved_as=resolved, correlation_ids=corr,  # type: ignore[arg-type]
                       hops=[HopPublic(**h) for h in hops], drop_to_commit_seconds=drop,
                       commit_to_delivered_seconds=slowest, truncated=g.truncated)
