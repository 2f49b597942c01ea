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

import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge.db import Database, utcnow
from bridge.db.tables import failures, inbound_files, message_keys
from bridge.errors import BridgeError, InputError, MappingError, ParseError, Position
from bridge.pipeline.land import Archive
from bridge.settings import ChannelConfig, ProcessingConfig, build_component
from mappings.base import EventDraft, Mapping, MappingContext
from mappings.canonical import CanonicalRecord
from mappings.crosswalks import CrosswalkSnapshot
from outbox.writer import Origin, write_records
from parsers.base import Message, Parser

__all__ = ["ChannelRuntime", "Processor", "ProcessResult", "build_channel", "worker_name"]

log = logging.getLogger(__name__)

FILE_LEVEL = -1


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


class Processor:
    """Claims landed files and processes them; safe to run in several threads and processes."""

    def __init__(self, db: Database, archive: Archive, channels: dict[str, ChannelRuntime],
                 config: ProcessingConfig | None = None, *, owner: str | None = None) -> None:
        self.db = db
        self.archive = archive
        self.channels = channels
        self.config = config or ProcessingConfig()
        self.owner = owner or worker_name()

    # -- claiming -----------------------------------------------------------

    def claim(self, inbound_id: int, *, statuses: Iterable[str] = ("landed", "processing")) -> Any | None:
        """Take the lease on one file; None if another holds it or it is not waiting."""
        now = utcnow()
        until = now + timedelta(seconds=self.config.lease_seconds)
        with self.db.write() as conn:
            res = conn.execute(
                update(inbound_files)
                .where(
                    inbound_files.c.id == inbound_id,
                    inbound_files.c.status.in_(list(statuses)),
                    or_(inbound_files.c.claimed_until.is_(None), inbound_files.c.claimed_until < now,
                        inbound_files.c.claimed_by == self.owner),
                )
                .values(status="processing", claimed_by=self.owner, claimed_until=until,
                        attempts=inbound_files.c.attempts + 1)
            )
            if res.rowcount != 1:
                return None
            return conn.execute(select(inbound_files).where(inbound_files.c.id == inbound_id)).one()

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
        whole_file = retry is not None and FILE_LEVEL in retry
        ctx = MappingContext(channel=row.channel, file_name=row.name, inbound_id=row.id,
                             received_at=row.received_at, crosswalks=CrosswalkSnapshot(self.db),
                             correlation_id=row.correlation_id)

        def wanted(index: int) -> bool:
            if retry is None:
                return index > row.progress
            return whole_file or index in retry or index > row.progress

        retry_set = retry or set()
        if channel.config.all_or_nothing:
            return self._process_all_or_nothing(row, channel, ctx, result, wanted)

        pending: list[_Outcome] = []
        file_error: InputError | None = None
        try:
            with self.archive.open(row.sha256) as stream:
                for message in channel.parser.parse(stream, name=row.name):
                    result.messages += 1
                    if not wanted(message.index):
                        channel.mapping.skipped(message, ctx)
                        continue
                    pending.append(self._map(channel.mapping, message, ctx))
                    if len(pending) >= self.config.batch_size:
                        self._flush(row, pending, result, retry_set)
                        pending = []
                drafts = list(channel.mapping.finish(ctx))
        except InputError as exc:
            file_error = exc.at(Position(file=row.name))
            drafts = []
        except FileNotFoundError:
            file_error = ParseError("the archived bytes of this file are missing", Position(file=row.name))
            drafts = []
        self._flush(row, pending, result, retry_set, drafts=drafts, file_error=file_error, final=True)
        return result

    def _map(self, mapping: Mapping, message: Message, ctx: MappingContext) -> _Outcome:
        if message.error is not None:
            return _Outcome(message, error=message.error.at(message.position))
        try:
            outputs = list(mapping.map(message, ctx))
            # the parsed form is done with: a batch keeps only records, not documents
            message.data = None
            return _Outcome(message, outputs=outputs)
        except InputError as exc:
            return _Outcome(message, error=exc.at(message.position))
        except (BridgeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # A bug or an unforeseen shape in a mapping: quarantine the message with the
            # exception's type only (its text may quote patient data), keep the trace at debug.
            log.debug("mapping raised %s", "".join(traceback.format_exception(exc)))
            err = MappingError(f"mapping {type(mapping).__name__} failed: {type(exc).__name__}", message.position)
            return _Outcome(message, error=err)

    def _flush(self, row: Any, pending: list[_Outcome], result: ProcessResult, retry: set[int], *,
               drafts: list[EventDraft] | None = None, file_error: InputError | None = None,
               final: bool = False) -> None:
        with self.db.write() as conn:
            self._write_batch(conn, row, pending, result, retry, drafts or [])
            if file_error is not None:
                self._record_failures(conn, row, [(FILE_LEVEL, file_error)])
                result.failures += 1
            elif final and FILE_LEVEL in retry:
                self._resolve(conn, row.id, [FILE_LEVEL])
            if final:
                self._finalise(conn, row, result, file_error)
            else:
                self._renew(conn, row.id)

    def _write_batch(self, conn: Connection, row: Any, pending: list[_Outcome], result: ProcessResult,
                     retry: set[int], drafts: list[EventDraft]) -> None:
        items: list[tuple[CanonicalRecord, Origin]] = []
        event_drafts: list[tuple[EventDraft, Origin]] = []
        bad: list[tuple[int, InputError]] = []
        good_retried: list[int] = []
        top = row.progress
        dupes = self._claim_message_keys(conn, row, pending)
        for outcome in pending:
            idx = outcome.message.index
            top = max(top, idx)
            if outcome.error is not None:
                bad.append((idx, outcome.error))
                continue
            if idx in dupes:
                result.duplicates += 1
                if idx in retry:
                    good_retried.append(idx)
                continue
            origin = Origin(row.channel, row.id, idx, row.name, row.correlation_id)
            for out in outcome.outputs:
                if isinstance(out, EventDraft):
                    event_drafts.append((out, origin))
                else:
                    items.append((out, origin))
            if idx in retry:
                good_retried.append(idx)
        file_origin = Origin(row.channel, row.id, None, row.name, row.correlation_id)
        event_drafts.extend((d, file_origin) for d in drafts)
        written = write_records(self.db, conn, items, drafts=event_drafts)
        result.records += written.inserted + written.updated
        result.events += written.events
        if bad:
            self._record_failures(conn, row, bad)
            result.failures += len(bad)
        if good_retried:
            self._resolve(conn, row.id, good_retried)
            result.resolved += len(good_retried)
        if top > row.progress:
            conn.execute(update(inbound_files).where(inbound_files.c.id == row.id).values(progress=top))

    def _claim_message_keys(self, conn: Connection, row: Any, pending: list[_Outcome]) -> set[int]:
        """Record each good message's (sender, control id) in ``message_keys``, in this transaction.

        Returns the indexes of messages whose key another message committed
        first: a resend (HL7 MSH-10 from the same sender on the same channel),
        skipped so nothing is recorded twice. Re-running the owner itself (a
        reprocess) is not a duplicate. On PostgreSQL a concurrent insert of the
        same key waits for the other transaction, so only one of them wins.
        """
        keyed = [o.message for o in pending if o.error is None and o.message.control_id and o.message.sender]
        if not keyed:
            return set()
        now = utcnow()
        values = [{"channel": row.channel, "sender": m.sender[:128], "control_id": m.control_id[:128],  # type: ignore[index]
                   "inbound_id": row.id, "message_index": m.index, "seen_at": now} for m in keyed]
        ins = postgresql.insert(message_keys) if self.db.is_postgres else sqlite.insert(message_keys)
        conn.execute(ins.on_conflict_do_nothing(index_elements=["channel", "sender", "control_id"]), values)
        owners: dict[tuple[str, str], tuple[int, int]] = {}
        ids = sorted({v["control_id"] for v in values})
        # name the senders too: the unique index is (channel, sender, control_id), and without
        # the middle column PostgreSQL scans every key of the channel (quadratic over time)
        senders = sorted({v["sender"] for v in values})
        for i in range(0, len(ids), 500):
            for r in conn.execute(select(message_keys.c.sender, message_keys.c.control_id, message_keys.c.inbound_id,
                                         message_keys.c.message_index).where(
                    message_keys.c.channel == row.channel, message_keys.c.sender.in_(senders),
                    message_keys.c.control_id.in_(ids[i : i + 500]))):
                owners[(r.sender, r.control_id)] = (r.inbound_id, r.message_index)
        dupes = {v["message_index"] for v in values
                 if owners.get((v["sender"], v["control_id"])) != (row.id, v["message_index"])}
        if dupes:
            log.info("duplicate control ids skipped", extra={"channel": row.channel, "inbound_id": row.id,
                                                             "duplicates": len(dupes)})
        return dupes

    def _record_failures(self, conn: Connection, row: Any, bad: list[tuple[int, InputError]]) -> None:
        now = utcnow()
        values = [{
            "inbound_id": row.id, "channel": row.channel, "message_index": idx, "category": err.category,
            "reason": err.reason[:4000], "kind": getattr(err, "kind", None), "key": (err.key or None) and str(err.key)[:255],
            "position": orjson.dumps(err.position.to_dict()).decode(), "status": "open", "attempts": 1,
            "created_at": now, "updated_at": now,
        } for idx, err in bad]
        ins = postgresql.insert(failures) if self.db.is_postgres else sqlite.insert(failures)
        stmt = ins.on_conflict_do_update(
            index_elements=["inbound_id", "message_index"],
            set_={
                "category": ins.excluded.category, "reason": ins.excluded.reason, "kind": ins.excluded.kind,
                "key": ins.excluded.key, "position": ins.excluded.position, "status": "open",
                "attempts": failures.c.attempts + 1, "updated_at": ins.excluded.updated_at,
                "resolved_at": None, "resolved_by": None,
            },
        )
        conn.execute(stmt, values)

    def _resolve(self, conn: Connection, inbound_id: int, indexes: list[int]) -> None:
        now = utcnow()
        conn.execute(
            update(failures)
            .where(failures.c.inbound_id == inbound_id, failures.c.message_index.in_(indexes),
                   failures.c.status == "open")
            .values(status="resolved", resolved_at=now, resolved_by="reprocess", updated_at=now)
        )

    def _finalise(self, conn: Connection, row: Any, result: ProcessResult, file_error: InputError | None) -> None:
        open_failures = conn.execute(
            select(func.count()).select_from(failures).where(failures.c.inbound_id == row.id,
                                                            failures.c.status == "open")
        ).scalar_one()
        committed_any = conn.execute(
            select(func.count()).select_from(failures).where(
                and_(failures.c.inbound_id == row.id, failures.c.status == "open",
                     failures.c.message_index != FILE_LEVEL))
        ).scalar_one() < max(result.messages, 0)
        if open_failures == 0:
            status = "processed"
        elif file_error is not None and result.messages == 0:
            status = "failed"
        elif committed_any:
            status = "partial"
        else:
            status = "failed"
        result.status = status
        conn.execute(
            update(inbound_files).where(inbound_files.c.id == row.id).values(
                status=status,
                message_count=result.messages,
                record_count=inbound_files.c.record_count + result.records,
                failure_count=open_failures,
                processed_at=utcnow(),
                claimed_by=None,
                claimed_until=None,
                error=(file_error.reason[:4000] if file_error else None),
            )
        )
        log.info("processed", extra={"channel": row.channel, "inbound_id": row.id, "status": status,
                                     "messages": result.messages, "records": result.records,
                                     "failures": open_failures})

    def _process_all_or_nothing(self, row: Any, channel: ChannelRuntime, ctx: MappingContext,
                                result: ProcessResult, wanted: Any) -> ProcessResult:
        outcomes: list[_Outcome] = []
        file_error: InputError | None = None
        drafts: list[EventDraft] = []
        try:
            with self.archive.open(row.sha256) as stream:
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
                errs = [(o.message.index, o.error) for o in bad if o.error is not None]
                if errs:
                    self._record_failures(conn, row, errs)
                if file_error is not None:
                    self._record_failures(conn, row, [(FILE_LEVEL, file_error)])
                elif errs:
                    held = ParseError(f"file is all-or-nothing: {len(errs)} of {len(outcomes)} messages failed, "
                                      "nothing committed", Position(file=row.name))
                    self._record_failures(conn, row, [(FILE_LEVEL, held)])
                result.failures = len(errs) + 1
                self._finalise(conn, row, result, file_error)
                result.status = "failed"
                conn.execute(update(inbound_files).where(inbound_files.c.id == row.id).values(status="failed"))
            return result
        with self.db.write() as conn:
            retry_all = {FILE_LEVEL} | {o.message.index for o in outcomes}
            self._write_batch(conn, row, outcomes, result, retry_all, drafts)
            self._resolve(conn, row.id, [FILE_LEVEL])
            self._finalise(conn, row, result, None)
        return result

    def _finish(self, inbound_id: int, status: str, error: str) -> None:
        with self.db.write() as conn:
            conn.execute(update(inbound_files).where(inbound_files.c.id == inbound_id).values(
                status=status, error=error, claimed_by=None, claimed_until=None, processed_at=utcnow()))


def new_correlation_id() -> str:
    return uuid.uuid4().hex
