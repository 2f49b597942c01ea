"""Processing a landed file: parse, map, and commit records, events and failures.

Each batch of messages commits in ONE transaction: the records (upserted),
their outbox events, the failures of the bad messages and the file's
``progress`` (the highest message index done). A message is atomic within it,
so after a crash processing resumes after ``progress`` and nothing is done
twice. Good messages commit even when others in the file fail, unless the
channel is ``all_or_nothing``: then the whole file is one transaction and any
failure rolls every record back.

A file is claimed with a lease (``claimed_by``/``claimed_until``) before it is
processed, so several processes on one database never process one file at
once, and a dead process's file is taken over once its lease expires.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, case, exc, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge.db import Database, utcnow
from bridge.db.tables import failures, inbound_files, message_keys
from bridge.errors import BridgeError, InputError, MappingError, ParseError, Position
from bridge.pipeline.land import Archive
from bridge.settings import ChannelConfig, ProcessingConfig, build_component
from mappings.base import EventDraft, Mapping, MappingContext
from mappings.canonical import CanonicalRecord
from mappings.crosswalks import CrosswalkSnapshot
from outbox.writer import Origin, Stamp, write_records
from parsers.base import Message, Parser

__all__ = ["ChannelRuntime", "Processor", "ProcessResult", "build_channel", "worker_name"]

log = logging.getLogger(__name__)

FILE_LEVEL = -1

# Message keys go to the driver directly, in sorted order (see Processor._claim_message_keys):
# on PostgreSQL one INSERT ... SELECT FROM unnest(arrays), on SQLite one multi-row VALUES per chunk.
_KEYS_CHUNK = 500
_KEY_COLS = "channel, sender, control_id, inbound_id, message_index"
_KEYS_ON_CONFLICT = f"ON CONFLICT (channel, sender, control_id) DO NOTHING RETURNING {_KEY_COLS}"
_PG_INSERT_KEYS = (
    f"INSERT INTO message_keys ({_KEY_COLS}, seen_at) SELECT {_KEY_COLS}, %s::timestamptz "
    f"FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::int[]) WITH ORDINALITY "
    f"AS u({_KEY_COLS}, ord) ORDER BY ord {_KEYS_ON_CONFLICT}"
)
_SQLITE_INSERT_KEYS = f"INSERT INTO message_keys ({_KEY_COLS}, seen_at) VALUES {{values}} {_KEYS_ON_CONFLICT}"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass
class ChannelRuntime:
    """A configured channel's parser and mapping, built once at start-up."""

    name: str
    config: ChannelConfig
    parser: Parser
    mapping: Mapping


def build_channel(name: str, config: ChannelConfig) -> ChannelRuntime:
    key = f"channels.{name}"
    parser_cls, parser_cfg = build_component("parser", config.parser.type, config.parser.options(), key=f"{key}.parser")
    mapping_cls, mapping_cfg = build_component("mapping", config.mapping.type, config.mapping.options(),
                                               key=f"{key}.mapping")
    parser = parser_cls(parser_cfg)
    mapping = mapping_cls(mapping_cfg)
    parser.bind(mapping.columns)
    return ChannelRuntime(name, config, parser, mapping)


@dataclass
class ProcessResult:
    inbound_id: int
    status: str
    messages: int = 0
    records: int = 0
    events: int = 0
    failures: int = 0
    resolved: int = 0
    #: messages skipped because their (sender, control id) was committed before (``message_keys``)
    duplicates: int = 0


@dataclass
class _Outcome:
    message: Message
    outputs: list[Any] = field(default_factory=list)
    error: InputError | None = None
    #: written instead of ``outputs`` if the message turns out to be a resend (``Mapping.answer_duplicate``)
    if_duplicate: tuple[EventDraft, ...] = ()


@dataclass
class _Batch:
    """One file's part of a write transaction: its mapped messages, end-of-file events and file error."""

    row: Any
    result: ProcessResult
    retry: set[int] = field(default_factory=set)
    pending: list[_Outcome] = field(default_factory=list)
    drafts: list[EventDraft] = field(default_factory=list)
    file_error: InputError | None = None
    #: the file's last batch: its status is settled and its lease released
    final: bool = False
    #: the highest message index this batch wrote (a final batch's goes out with its status)
    top: int | None = None
    #: failures this batch opened: (all, of messages rather than of the file)
    opened: tuple[int, int] = (0, 0)


class Processor:
    """Claims landed files and processes them; safe to run in several threads and processes."""

    def __init__(self, db: Database, archive: Archive, channels: dict[str, ChannelRuntime],
                 config: ProcessingConfig | None = None, *, owner: str | None = None) -> None:
        self.db = db
        self.archive = archive
        self.channels = channels
        self.config = config or ProcessingConfig()
        self.owner = owner or worker_name()
        self._sql = _statements(db.is_postgres)

    # -- claiming -----------------------------------------------------------

    def claim(self, inbound_id: int, *, statuses: Iterable[str] = ("landed", "processing")) -> Any | None:
        """Take the lease on one file; None if another holds it or it is not waiting."""
        rows = self.claim_many([inbound_id], statuses=statuses)
        return rows[0] if rows else None

    def claim_many(self, inbound_ids: Sequence[int], *,
                   statuses: Iterable[str] = ("landed", "processing")) -> list[Any]:
        """Take the lease on each waiting file among ``inbound_ids`` (one statement); the rows taken, by id."""
        now = utcnow()
        until = now + timedelta(seconds=self.config.lease_seconds)
        with self.db.write() as conn:
            rows = conn.execute(self._sql.claim, {"ids": list(inbound_ids), "statuses": list(statuses), "now": now,
                                                  "owner": self.owner, "until": until}).all()
        return sorted(rows, key=lambda r: r.id)

    def claim_next(self) -> Any | None:
        now = utcnow()
        with self.db.read() as conn:
            ids = conn.execute(
                select(inbound_files.c.id)
                .where(
                    inbound_files.c.status.in_(("landed", "processing")),
                    inbound_files.c.channel.in_(list(self.channels)),
                    or_(inbound_files.c.claimed_until.is_(None), inbound_files.c.claimed_until < now),
                )
                .order_by(inbound_files.c.id)
                .limit(8)
            ).scalars().all()
        for inbound_id in ids:
            row = self.claim(inbound_id)
            if row is not None:
                return row
        return None

    def _renew(self, conn: Connection, inbound_id: int) -> None:
        conn.execute(
            update(inbound_files).where(inbound_files.c.id == inbound_id, inbound_files.c.claimed_by == self.owner)
            .values(claimed_until=utcnow() + timedelta(seconds=self.config.lease_seconds))
        )

    # -- processing ---------------------------------------------------------

    def run_once(self) -> ProcessResult | None:
        row = self.claim_next()
        if row is None:
            return None
        return self.process_claimed(row)

    def process(self, inbound_id: int) -> ProcessResult | None:
        """Claim and process one file now (None if it is not waiting or someone else has it)."""
        row = self.claim(inbound_id)
        return None if row is None else self.process_claimed(row)

    def reprocess(self, inbound_id: int, *, indexes: set[int] | None = None) -> ProcessResult | None:
        """Re-run a file's open failures (all of them, or only ``indexes``).

        Records upsert by natural key and events are only written on change, so
        re-running a message that committed before creates nothing twice.
        """
        with self.db.read() as conn:
            open_idx = set(conn.execute(
                select(failures.c.message_index).where(failures.c.inbound_id == inbound_id,
                                                       failures.c.status == "open")
            ).scalars())
        retry = open_idx if indexes is None else (open_idx & indexes)
        row = self.claim(inbound_id, statuses=("processed", "partial", "failed", "landed", "processing"))
        if row is None:
            return None
        return self.process_claimed(row, retry=retry)

    def process_claimed(self, row: Any, *, retry: set[int] | None = None) -> ProcessResult:
        channel = self.channels.get(row.channel)
        result = ProcessResult(row.id, "failed")
        if channel is None:
            self._finish(row.id, "failed", f"channel {row.channel!r} is not configured in this process")
            result.status = "failed"
            return result
        ctx = self._context(row, CrosswalkSnapshot(self.db))
        wanted = _wanted(row, retry)
        retry_set = retry or set()
        if channel.config.all_or_nothing:
            return self._process_all_or_nothing(row, channel, ctx, result, wanted)

        def flush(batch: _Batch) -> None:
            self._write([batch])

        flush(self._parse_and_map(row, channel, ctx, result, retry_set, wanted, flush))
        return result

    def lease(self) -> tuple[str, datetime]:
        """(owner, until) of a lease taken now: for :func:`~bridge.pipeline.land.land_many` to land files claimed."""
        return self.owner, utcnow() + timedelta(seconds=self.config.lease_seconds)

    def process_many(self, inbound_ids: Sequence[int], *, claimed: Sequence[Any] = (),
                     data: dict[int, bytes] | None = None) -> dict[int, ProcessResult]:
        """Claim and process several small files (MLLP messages) with ONE write transaction for all.

        The MLLP listener's group commit: the files are claimed in one
        statement, each is parsed and mapped in memory (an MLLP frame is
        bounded by the size limit), and every file's records, events,
        failures and final status commit together, each file exactly as
        :meth:`process` would have committed it. The answer holds the files
        this call took; one another process holds, or one already done, is
        left out. Should the group's transaction fail, each file is processed
        on its own, so one file's storage error cannot hold back the others.

        ``claimed``: rows this processor's lease already holds (landed claimed,
        :meth:`lease`), not claimed again. ``data``: the files' bytes by id, when
        the caller holds them (the archive is not read again).
        """
        held = {row.id for row in claimed}
        rest = [i for i in inbound_ids if i not in held]
        rows = sorted([*claimed, *(self.claim_many(rest) if rest else ())], key=lambda r: r.id)
        results: dict[int, ProcessResult] = {}
        grouped: list[_Batch] = []
        crosswalks = CrosswalkSnapshot(self.db)
        for row in rows:
            channel = self.channels.get(row.channel)
            if channel is None or channel.config.all_or_nothing:
                results[row.id] = self.process_claimed(row)
                continue
            grouped.append(self._member(row, channel, crosswalks, data.get(row.id) if data is not None else None))
        if not grouped:
            return results
        try:
            self._write(grouped)
        except (BridgeError, exc.IntegrityError) as error:
            log.warning("group commit failed; processing its files one by one",
                        extra={"files": len(grouped), "error": type(error).__name__})
            for batch in grouped:
                try:
                    results[batch.row.id] = self.process_claimed(batch.row)
                except (BridgeError, exc.IntegrityError) as alone:
                    # left out of the answer, still leased: the caller settles it (or it is retried)
                    log.error("processing failed", extra={"inbound_id": batch.row.id, "error": type(alone).__name__})
            return results
        results.update((batch.row.id, batch.result) for batch in grouped)
        return results

    def process_in(self, conn: Connection, rows: Sequence[Any],
                   data: dict[int, bytes]) -> tuple[dict[int, ProcessResult], int]:
        """Process files this processor holds the lease of, from their bytes ``data``, in ``conn``'s transaction.

        The MLLP listener lands a group and processes it in ONE transaction this
        way (one commit, each row written once): nothing about a message is
        committed unless all of it is. A storage error propagates: the caller
        rolls back and lands and processes the group in two steps instead
        (:func:`~bridge.pipeline.land.land_many`, then :meth:`process_many`, which
        settles each file on its own if the group cannot commit). Returns the
        results by id and the number of new records, for :meth:`committed`
        once the transaction has committed. A member that processed cleanly is
        logged at DEBUG, not INFO: the caller logs the group (an MLLP listener
        at 1,000 messages/s would otherwise write a line per message).
        """
        crosswalks = CrosswalkSnapshot(self.db, conn)
        grouped = []
        for row in rows:
            channel = self.channels[row.channel]
            if channel.config.all_or_nothing:
                raise ValueError(f"channel {row.channel!r} is all-or-nothing: process its files with process_many")
            grouped.append(self._member(row, channel, crosswalks, data[row.id]))
        inserted = self._commit(conn, grouped, quiet=True, fresh=True)
        return {batch.row.id: batch.result for batch in grouped}, inserted

    def committed(self, inserted: int) -> None:
        """After a commit of ``inserted`` new records (:meth:`process_in`): keep PostgreSQL's statistics fresh."""
        if self.db.is_postgres and inserted:
            _statistics(self.db.url).grown(self.db, inserted)

    def _member(self, row: Any, channel: ChannelRuntime, crosswalks: CrosswalkSnapshot,
                data: bytes | None) -> _Batch:
        """A group member's one final batch, parsed and mapped (from ``data`` when the caller has the bytes)."""
        return self._parse_and_map(row, channel, self._context(row, crosswalks), ProcessResult(row.id, "failed"),
                                   set(), _wanted(row, None), None, data)

    def _context(self, row: Any, crosswalks: CrosswalkSnapshot) -> MappingContext:
        return MappingContext(channel=row.channel, file_name=row.name, inbound_id=row.id,
                              received_at=row.received_at, crosswalks=crosswalks,
                              correlation_id=row.correlation_id)

    def _parse_and_map(self, row: Any, channel: ChannelRuntime, ctx: MappingContext, result: ProcessResult,
                       retry: set[int], wanted: Callable[[int], bool],
                       flush: Callable[[_Batch], None] | None, data: bytes | None = None) -> _Batch:
        """Parse and map the file's wanted messages into its final batch; ``flush`` (if any) commits
        each full batch on the way, so memory stays bounded on a file of any size. ``data``: the
        file's bytes, when the caller has them in memory."""
        work = _Batch(row, result, retry, final=True)
        try:
            with io.BytesIO(data) if data is not None else self.archive.open_landed(row) as stream:
                for message in channel.parser.parse(stream, name=row.name):
                    result.messages += 1
                    if not wanted(message.index):
                        channel.mapping.skipped(message, ctx)
                        continue
                    work.pending.append(self._map(channel.mapping, message, ctx))
                    if flush is not None and len(work.pending) >= self.config.batch_size:
                        flush(_Batch(row, result, retry, work.pending))
                        work.pending = []
                work.drafts = list(channel.mapping.finish(ctx))
        except InputError as exc:
            work.file_error = exc.at(Position(file=row.name))
        except FileNotFoundError:
            work.file_error = ParseError("the archived bytes of this file are missing", Position(file=row.name))
        if work.file_error is not None:
            work.drafts = []
        return work

    def _map(self, mapping: Mapping, message: Message, ctx: MappingContext) -> _Outcome:
        if message.error is not None:
            return _Outcome(message, error=message.error.at(message.position))
        try:
            outputs = list(mapping.map(message, ctx))
            # a keyed message may prove a resend in the commit transaction: take the answer now
            # a tuple: no answer (nearly always) is the shared empty tuple, one object less kept per message
            answer = tuple(mapping.answer_duplicate(message, ctx)) if message.control_id and message.sender else ()
            # the parsed form is done with: a batch keeps only records, not documents
            message.data = None
            return _Outcome(message, outputs=outputs, if_duplicate=answer)
        except InputError as exc:
            return _Outcome(message, error=exc.at(message.position))
        except (BridgeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # A bug or an unforeseen shape in a mapping: quarantine the message with the
            # exception's type only (its text may quote patient data), keep the trace at debug.
            log.debug("mapping raised %s", "".join(traceback.format_exception(exc)))
            err = MappingError(f"mapping {type(mapping).__name__} failed: {type(exc).__name__}", message.position)
            return _Outcome(message, error=err)

    def _write(self, batches: list[_Batch]) -> None:
        """Commit ``batches`` in one write transaction; then keep PostgreSQL's statistics fresh."""
        with self.db.write() as conn:
            inserted = self._commit(conn, batches)
        self.committed(inserted)

    def _commit(self, conn: Connection, batches: list[_Batch], *, quiet: bool = False, fresh: bool = False) -> int:
        """Write the batches of one file, or of a group of files, in ``conn``'s transaction.

        The statements are per call, not per file (message keys, records,
        events, failures, progress, final status: each one statement for all
        the batches), so a group of small files costs about what one does.
        ``fresh``: every file was landed in this same transaction, so it has no
        failures but those its batch opens here (see :meth:`_finalise`).
        """
        inserted = self._write_batches(conn, batches)
        final = [b for b in batches if b.final]
        if final:
            self._finalise(conn, final, quiet=quiet, fresh=fresh)
        for batch in batches:
            if not batch.final:
                self._renew(conn, batch.row.id)
        return inserted

    def _write_batches(self, conn: Connection, batches: list[_Batch]) -> int:
        """Write the batches' keys, records, events, failures and progress; the number of new records."""
        items: list[tuple[CanonicalRecord, Origin]] = []
        event_drafts: list[tuple[EventDraft, Origin]] = []
        bad: list[tuple[Any, int, InputError]] = []
        resolved: list[tuple[int, int]] = []
        progress: list[dict[str, int]] = []
        dupes = self._claim_message_keys(conn, batches)
        for batch in batches:
            row, result = batch.row, batch.result
            top = row.progress
            failed = 0
            for outcome in batch.pending:
                idx = outcome.message.index
                top = max(top, idx)
                if outcome.error is not None:
                    bad.append((row, idx, outcome.error))
                    failed += 1
                    continue
                origin = Origin(row.channel, row.id, idx, row.name, row.correlation_id)
                if (row.id, idx) in dupes:
                    result.duplicates += 1
                    # the mapping's answer to a resend (an X12 TA1 with note code 025), if any
                    event_drafts.extend((d, origin) for d in outcome.if_duplicate)
                else:
                    for out in outcome.outputs:
                        if isinstance(out, EventDraft):
                            event_drafts.append((out, origin))
                        else:
                            items.append((out, origin))
                if idx in batch.retry:
                    resolved.append((row.id, idx))
                    result.resolved += 1
            file_origin = Origin(row.channel, row.id, None, row.name, row.correlation_id)
            event_drafts.extend((d, file_origin) for d in batch.drafts)
            batch.opened = (failed + (batch.file_error is not None), failed)
            result.failures += batch.opened[0]
            if batch.file_error is not None:
                bad.append((row, FILE_LEVEL, batch.file_error))
            elif batch.final and FILE_LEVEL in batch.retry:
                resolved.append((row.id, FILE_LEVEL))
            if batch.final:
                batch.top = top  # written by the final status update, one statement less
            elif top > row.progress:
                progress.append({"b_id": row.id, "b_progress": top})
        written = write_records(self.db, conn, items, drafts=event_drafts)
        for batch in batches:
            batch.result.records += written.records_by_inbound[batch.row.id]
            batch.result.events += written.events_by_inbound[batch.row.id]
        if bad:
            self._record_failures(conn, bad)
        if resolved:
            self._resolve(conn, resolved)
        if progress:
            conn.execute(self._sql.progress, progress)
        return written.inserted

    def _claim_message_keys(self, conn: Connection, batches: list[_Batch]) -> set[tuple[int, int]]:
        """Record each good message's (sender, control id) in ``message_keys``, in this transaction.

        Returns the (inbound id, message index) of messages whose key another
        message committed first: a resend (HL7 MSH-10 from the same sender on
        the same channel), skipped so nothing is recorded twice. Re-running the
        owner itself (a reprocess) is not a duplicate. On PostgreSQL a
        concurrent insert of the same key waits for the other transaction, so
        only one of them wins; keys are inserted in sorted order, so two
        groups sharing keys wait for each other instead of deadlocking.
        """
        # tuples, not dicts, straight to the driver: SQLAlchemy's per-row parameter handling of an
        # executemany with RETURNING cost more than the insert itself
        keys = sorted(
            (b.row.channel, o.message.sender[:128], o.message.control_id[:128], b.row.id, o.message.index)
            for b in batches for o in b.pending
            if o.error is None and o.message.control_id and o.message.sender)
        if not keys:
            return set()
        # the keys this insert returns are owned by these messages: nothing to read back (the
        # common case). Reading every key back instead (WHERE control_id IN (500 ids)) cost
        # PostgreSQL a scan of all the sender's keys per batch: slower as the table grew.
        owners: dict[tuple[str, str, str], tuple[int, int]] = {}
        seen_at = Stamp(utcnow()).for_db(self.db)
        for i in range(0, len(keys), _KEYS_CHUNK):
            part = keys[i : i + _KEYS_CHUNK]
            if self.db.is_postgres:
                sql, params = _PG_INSERT_KEYS, (seen_at, *(list(c) for c in zip(*part, strict=True)))
            else:
                sql = _SQLITE_INSERT_KEYS.format(values=", ".join(["(?, ?, ?, ?, ?, ?)"] * len(part)))
                params = tuple(v for key in part for v in (*key, seen_at))
            for channel, sender, control_id, inbound_id, index in conn.exec_driver_sql(sql, params):
                owners[(channel, sender, control_id)] = (inbound_id, index)
        taken = sorted({key[:3] for key in keys} - owners.keys())
        for i in range(0, len(taken), 500):
            # keys committed before (a resend, or a reprocess of the owner itself): read their owners
            chunk = taken[i : i + 500]
            for r in conn.execute(self._sql.key_owners, {"channels": sorted({c for c, _s, _i in chunk}),
                                                         "senders": sorted({s for _c, s, _i in chunk}),
                                                         "ids": [cid for _c, _s, cid in chunk]}):
                owners[(r.channel, r.sender, r.control_id)] = (r.inbound_id, r.message_index)
        dupes = {key[3:] for key in keys if owners.get(key[:3]) != key[3:]}
        if dupes:
            log.info("duplicate control ids skipped", extra={"duplicates": len(dupes)})
        return dupes

    def _record_failures(self, conn: Connection, bad: list[tuple[Any, int, InputError]]) -> None:
        """Open (or re-open) a failure for each (file row, message index, error)."""
        now = utcnow()
        values = [{
            "inbound_id": row.id, "channel": row.channel, "message_index": idx, "category": err.category,
            "reason": err.reason[:4000], "kind": getattr(err, "kind", None), "key": (err.key or None) and str(err.key)[:255],
            "position": orjson.dumps(err.position.to_dict()).decode(), "status": "open", "attempts": 1,
            "created_at": now, "updated_at": now,
        } for row, idx, err in bad]
        conn.execute(self._sql.record_failures, values)

    def _resolve(self, conn: Connection, done: list[tuple[int, int]]) -> None:
        """Resolve the open failures of these (inbound id, message index): their messages went through."""
        now = utcnow()
        by_file: dict[int, list[int]] = {}
        for inbound_id, idx in done:
            by_file.setdefault(inbound_id, []).append(idx)
        for inbound_id, indexes in by_file.items():
            conn.execute(
                update(failures)
                .where(failures.c.inbound_id == inbound_id, failures.c.message_index.in_(indexes),
                       failures.c.status == "open")
                .values(status="resolved", resolved_at=now, resolved_by="reprocess", updated_at=now)
            )

    def _finalise(self, conn: Connection, batches: list[_Batch], *, quiet: bool = False, fresh: bool = False) -> None:
        """Settle each file's status from its open failures and release its lease (one statement each).

        ``quiet``: a file that processed cleanly is logged at DEBUG (its caller logs the group).
        ``fresh``: the files were landed in this transaction, so their open failures are the ones
        their batches opened, counted in memory instead of read back (an MLLP group's statement less)."""
        if fresh:
            open_counts = {b.row.id: b.opened for b in batches}
        else:
            open_counts = {r.inbound_id: (int(r.total), int(r.messages or 0))
                           for r in conn.execute(self._sql.open_failures, {"ids": [b.row.id for b in batches]})}
        now = utcnow()
        updates: list[dict[str, Any]] = []
        for batch in batches:
            row, result, file_error = batch.row, batch.result, batch.file_error
            open_failures, message_failures = open_counts.get(row.id, (0, 0))
            if open_failures == 0:
                status = "processed"
            elif file_error is not None and result.messages == 0:
                status = "failed"
            elif message_failures < max(result.messages, 0):
                status = "partial"  # some message committed
            else:
                status = "failed"
            result.status = status
            updates.append({"b_id": row.id, "b_status": status, "b_messages": result.messages,
                            "b_progress": row.progress if batch.top is None else batch.top,
                            "b_records": result.records, "b_failures": open_failures, "b_now": now,
                            "b_error": file_error.reason[:4000] if file_error else None})
            level = logging.DEBUG if quiet and status == "processed" else logging.INFO
            log.log(level, "processed", extra={"channel": row.channel, "inbound_id": row.id, "status": status,
                                               "messages": result.messages, "records": result.records,
                                               "failures": open_failures})
        conn.execute(self._sql.finalise, updates)

    def _process_all_or_nothing(self, row: Any, channel: ChannelRuntime, ctx: MappingContext,
                                result: ProcessResult, wanted: Any) -> ProcessResult:
        outcomes: list[_Outcome] = []
        file_error: InputError | None = None
        drafts: list[EventDraft] = []
        try:
            with self.archive.open_landed(row) as stream:
                for message in channel.parser.parse(stream, name=row.name):
                    result.messages += 1
                    outcomes.append(self._map(channel.mapping, message, ctx))
            drafts = list(channel.mapping.finish(ctx))
        except InputError as exc:
            file_error = exc.at(Position(file=row.name))
        bad = [o for o in outcomes if o.error is not None]
        if bad or file_error is not None:
            # nothing of this file commits; every good message is listed as held back
            with self.db.write() as conn:
                errs = [(row, o.message.index, o.error) for o in bad if o.error is not None]
                if file_error is not None:
                    errs.append((row, FILE_LEVEL, file_error))
                else:
                    held = ParseError(f"file is all-or-nothing: {len(errs)} of {len(outcomes)} messages failed, "
                                      "nothing committed", Position(file=row.name))
                    errs.append((row, FILE_LEVEL, held))
                self._record_failures(conn, errs)
                result.failures = len(errs)
                self._finalise(conn, [_Batch(row, result, file_error=file_error, final=True)])
                result.status = "failed"
                conn.execute(update(inbound_files).where(inbound_files.c.id == row.id).values(status="failed"))
            return result
        retry_all = {FILE_LEVEL} | {o.message.index for o in outcomes}
        self._write([_Batch(row, result, retry_all, outcomes, drafts, final=True)])
        return result

    def _finish(self, inbound_id: int, status: str, error: str) -> None:
        with self.db.write() as conn:
            conn.execute(update(inbound_files).where(inbound_files.c.id == inbound_id).values(
                status=status, error=error, claimed_by=None, claimed_until=None, processed_at=utcnow()))


def _wanted(row: Any, retry: set[int] | None) -> Callable[[int], bool]:
    """Which of the file's messages to run: those past its progress, and on a reprocess the retried ones
    (every one if the file-level failure is retried)."""
    if retry is None:
        return lambda index: index > row.progress
    whole_file = FILE_LEVEL in retry
    return lambda index: whole_file or index in retry or index > row.progress


class _Statements:
    """The statements a batch or a group runs, built once per backend.

    Building a SQLAlchemy statement (its clauses and its cache key) cost more
    than running it on a group of a few MLLP messages: about half of a
    group's CPU time under cProfile. Built once, with expanding ``IN``
    parameters, each is compiled once and then only executed.
    """

    def __init__(self, postgres: bool) -> None:
        dialect_insert = postgresql.insert if postgres else sqlite.insert
        f = inbound_files.c
        self.claim = (
            update(inbound_files)
            .where(f.id.in_(bindparam("ids", expanding=True)), f.status.in_(bindparam("statuses", expanding=True)),
                   or_(f.claimed_until.is_(None), f.claimed_until < bindparam("now"),
                       f.claimed_by == bindparam("owner")))
            .values(status="processing", claimed_by=bindparam("owner"), claimed_until=bindparam("until"),
                    attempts=f.attempts + 1)
            .returning(*inbound_files.c)
        )
        self.progress = update(inbound_files).where(f.id == bindparam("b_id")).values(progress=bindparam("b_progress"))
        self.finalise = update(inbound_files).where(f.id == bindparam("b_id")).values(
            status=bindparam("b_status"), message_count=bindparam("b_messages"),
            record_count=f.record_count + bindparam("b_records"), failure_count=bindparam("b_failures"),
            processed_at=bindparam("b_now"), claimed_by=None, claimed_until=None, error=bindparam("b_error"),
            # as the progress update would have (never backwards: a final batch may hold no message)
            progress=case((f.progress < bindparam("b_progress"), bindparam("b_progress")), else_=f.progress),
        )
        k = message_keys.c
        self.key_owners = select(k.channel, k.sender, k.control_id, k.inbound_id, k.message_index).where(
            k.channel.in_(bindparam("channels", expanding=True)), k.sender.in_(bindparam("senders", expanding=True)),
            k.control_id.in_(bindparam("ids", expanding=True)))
        self.open_failures = (
            select(failures.c.inbound_id, func.count().label("total"),
                   func.sum(case((failures.c.message_index != FILE_LEVEL, 1), else_=0)).label("messages"))
            .where(failures.c.inbound_id.in_(bindparam("ids", expanding=True)), failures.c.status == "open")
            .group_by(failures.c.inbound_id)
        )
        ins = dialect_insert(failures)
        self.record_failures = ins.on_conflict_do_update(
            index_elements=["inbound_id", "message_index"],
            set_={
                "category": ins.excluded.category, "reason": ins.excluded.reason, "kind": ins.excluded.kind,
                "key": ins.excluded.key, "position": ins.excluded.position, "status": "open",
                "attempts": failures.c.attempts + 1, "updated_at": ins.excluded.updated_at,
                "resolved_at": None, "resolved_by": None,
            },
        )


@functools.cache
def _statements(postgres: bool) -> _Statements:
    return _Statements(postgres)


#: new records after which PostgreSQL statistics are refreshed, at the least
_ANALYZE_MIN = 5000


class _Statistics:
    """Keeps PostgreSQL's planner statistics of the looked-up tables fresh while they grow fast.

    A batch looks up 1,000 natural keys (``type = $1 AND natural_key = ANY($2)``).
    With statistics taken when ``records`` was small (or empty, at the start),
    PostgreSQL plans that as a bitmap scan of every record of the type, and
    each batch gets slower as the table grows (EXPLAIN ANALYZE at 200,000
    charges: 191 ms per lookup, against 9 ms on the unique index once
    analyzed); autovacuum re-analyzes only after 10% growth and its nap. So
    after each 50% of growth (and ``_ANALYZE_MIN`` rows at the least) the
    tables are analyzed here: a few times per order of magnitude, each
    sampling at most 30,000 rows. ``inbound_files`` too: without statistics
    the MLLP group's look-up of its messages' sha256 (``channel = $1 AND
    sha256 = ANY($2)``) used only ``channel`` of the unique index and filtered
    every landed row of the channel (2.7 ms at 4,000 messages, against 0.05 ms
    once analyzed).

    The ANALYZE runs in a thread of its own, one at a time, not in the caller's:
    it took 20 ms at 5,000 records and 280 ms at 115,000, and an MLLP group's
    ACKs waited for it (PostgreSQL p99 at 1,000 messages/s: 182 ms over 50,000).
    """

    TABLES = "inbound_files, records, message_keys"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0
        self._size = 0
        self._running: threading.Thread | None = None

    def grown(self, db: Database, inserted: int) -> None:
        with self._lock:
            self._since += inserted
            if self._running is not None or self._since < max(_ANALYZE_MIN, self._size // 2):
                return
            self._since = 0
            self._running = threading.Thread(target=self._analyze, args=(db,), name="bridge-analyze", daemon=True)
            self._running.start()

    def wait(self, timeout: float | None = None) -> None:
        """Until the ANALYZE running now (if any) is done."""
        running = self._running
        if running is not None:
            running.join(timeout)

    def _analyze(self, db: Database) -> None:
        try:
            with db.write() as conn:
                conn.exec_driver_sql(f"ANALYZE {self.TABLES}")
                size = int(conn.exec_driver_sql(
                    "SELECT reltuples FROM pg_class WHERE oid = 'records'::regclass").scalar_one())
            with self._lock:
                self._size = size
            log.info("statistics refreshed", extra={"tables": self.TABLES, "records": size})
        except Exception as exc:  # noqa: BLE001 - autovacuum still analyzes, later; the next growth tries again
            log.warning("statistics refresh failed", extra={"tables": self.TABLES, "error": type(exc).__name__})
        finally:
            with self._lock:
                self._running = None


@functools.cache
def _statistics(url: str) -> _Statistics:
    return _Statistics()


def new_correlation_id() -> str:
    return uuid.uuid4().hex
