"""Operator actions, shared by the CLI (``bridge failures|crosswalk``), the API (``/v1``) and the console.

Each action here takes an ``actor`` (``api:<client>``, ``console:<client>``,
``cli:<user>``) and a ``reason``, and appends one row to the append-only
``audit_log`` (who, what, when, why, details) in the same transaction as the
change it records, so no change goes unaudited and no audit row describes a
change that rolled back.

- Reprocessing re-runs failed messages through :meth:`Processor.reprocess`
  (records upsert by natural key, events only on change: idempotent, and safe
  while the watchers run, since each file is claimed with its lease first; a
  file another process holds is reported ``busy`` and stays open).
- Bulk reprocessing runs in a background thread registered in an in-memory
  :class:`JobRegistry` (per process; a job does not survive a restart, and the
  failures it did not reach simply stay open), with progress and cancel.
- Edit-and-resubmit lands corrected bytes as a NEW ``inbound_files`` row with
  ``parent_id`` = the original (whose bytes and row are never changed); once
  the new version has processed, the original's open failures are resolved
  with ``resolved_by = 'resubmit:<new id>'``.
- Crosswalk edits report the open ``master_data`` failures whose kind and key
  they fix (:func:`fixable_failures`), and :func:`reprocess_fixed` re-runs
  exactly those.
- :func:`excerpt` reads the archived bytes around a failure's position, with
  patient identifiers masked unless the caller may see PHI.

Delivery (dead letters, replay) is :mod:`outbox.relay`'s; this module only
calls it.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from bridge.db import Database, audit, like_escape, utcnow
from bridge.db.tables import (
    audit_log,
    crosswalks,
    deliveries,
    events,
    failures,
    inbound_files,
    records,
)
from bridge.errors import BridgeError, ConfigError
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import ChannelRuntime, Processor, build_channel
from bridge.settings import ProcessingConfig, Settings
from mappings import crosswalks as xw

__all__ = [
    "CATEGORIES",
    "FailureFilter",
    "Job",
    "JobRegistry",
    "OpsContext",
    "OpsError",
    "ReprocessSummary",
    "audit",
    "crosswalk_add",
    "crosswalk_deactivate",
    "crosswalk_import",
    "crosswalk_search",
    "dashboard",
    "excerpt",
    "fixable_failures",
    "list_audit",
    "list_failures",
    "reprocess_failures",
    "reprocess_fixed",
    "resubmit",
    "set_failure_status",
    "trace",
]

log = logging.getLogger(__name__)

CATEGORIES = ("parse", "mapping", "master_data", "delivery")
CROSSWALK_KINDS = ("item", "department", "vendor", "gl_account", "location")


class OpsError(BridgeError):
    """An operator action was refused: ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OpsContext:
    """What the actions need: the database, the archive, and the channels that can re-run files."""

    db: Database
    archive: Archive
    channels: dict[str, ChannelRuntime]
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, runtime: Any = None) -> OpsContext:
        if runtime is not None:
            return cls(db, runtime.archive, runtime.channels, settings.processing)
        channels = {n: build_channel(n, c) for n, c in settings.channels.items() if c.enabled}
        return cls(db, Archive(settings.archive_dir), channels, settings.processing)

    def processor(self) -> Processor:
        return Processor(self.db, self.archive, self.channels, self.processing)


# -- failures: filter, list -------------------------------------------------


@dataclass
class FailureFilter:
    """Which failures: every field optional; ``partner`` matches the file's origin (sender host, peer, path)."""

    channel: str | None = None
    category: str | None = None
    status: str | None = "open"
    partner: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None
    key: str | None = None
    inbound_id: int | None = None

    def conditions(self) -> list[Any]:
        c: list[Any] = []
        if self.channel:
            c.append(failures.c.channel == self.channel)
        if self.category:
            c.append(failures.c.category == self.category)
        if self.status and self.status != "all":
            c.append(failures.c.status == self.status)
        if self.since is not None:
            c.append(failures.c.created_at >= self.since)
        if self.until is not None:
            c.append(failures.c.created_at < self.until)
        if self.kind:
            c.append(failures.c.kind == self.kind)
        if self.key:
            c.append(failures.c.key == self.key)
        if self.inbound_id is not None:
            c.append(failures.c.inbound_id == self.inbound_id)
        if self.partner:
            pat = "%" + like_escape(self.partner) + "%"
            c.append(failures.c.inbound_id.in_(
                select(inbound_files.c.id).where(inbound_files.c.origin.like(pat, escape="\\"))))
        return c

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


#: the columns that locate a file's bytes in the archive (:meth:`Archive.open_landed`)
_UNIT = (inbound_files.c.sha256, inbound_files.c.size, inbound_files.c.pack, inbound_files.c.pack_offset)


def list_failures(db: Database, flt: FailureFilter, *, before_id: int | None = None,
                  limit: int = 50) -> list[Any]:
    """Failures matching ``flt``, newest first, with their file's name, sha256 and origin (keyset by id)."""
    q = (select(failures, inbound_files.c.name.label("file_name"), *_UNIT,
                inbound_files.c.origin)
         .join(inbound_files, inbound_files.c.id == failures.c.inbound_id)
         .where(*flt.conditions()))
    if before_id is not None:
        q = q.where(failures.c.id < before_id)
    q = q.order_by(failures.c.id.desc()).limit(limit)
    with db.read() as conn:
        return list(conn.execute(q).all())


def count_failures(db: Database, flt: FailureFilter) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(failures).where(*flt.conditions())).scalar_one())


# -- reprocess ----------------------------------------------------------------


@dataclass
class ReprocessSummary:
    files: int = 0
    messages: int = 0
    resolved: int = 0
    failed_again: int = 0
    busy: int = 0
    errors: int = 0
    cancelled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _targets(db: Database, conds: Sequence[Any]) -> dict[int, set[int]]:
    with db.read() as conn:
        rows = conn.execute(select(failures.c.inbound_id, failures.c.message_index)
                            .where(failures.c.status == "open", *conds)).all()
    by_file: dict[int, set[int]] = {}
    for inbound_id, idx in rows:
        by_file.setdefault(inbound_id, set()).add(idx)
    return by_file


def reprocess_failures(ctx: OpsContext, conds: Sequence[Any], *, actor: str, reason: str | None = None,
                       action: str = "failures.reprocess", target: str = "filter",
                       details: dict[str, Any] | None = None,
                       progress: Callable[[ReprocessSummary, int, int], None] | None = None,
                       cancel: threading.Event | None = None, workers: int | None = None) -> ReprocessSummary:
    """Re-run the open failures matching ``conds``, file by file; audited once at the end.

    ``workers`` threads (default ``processing.workers``) take files in id order,
    each file under its own claim, so parsing and mapping one file overlaps
    another's commit. ``progress(summary, done_messages, total_messages)`` is
    called after each file; setting ``cancel`` stops taking files (files in
    progress finish: each is one claim, and its batches are atomic).
    """
    by_file = _targets(ctx.db, conds)
    total = sum(len(v) for v in by_file.values())
    summary = ReprocessSummary()
    todo = iter(sorted(by_file.items()))
    lock = threading.Lock()
    state = {"done": 0}
    if progress is not None:
        progress(summary, 0, total)

    def work() -> None:
        processor = ctx.processor()  # one per thread: its lease owner names the thread
        while True:
            with lock:
                if cancel is not None and cancel.is_set():
                    summary.cancelled = summary.cancelled or next(todo, None) is not None
                    return
                item = next(todo, None)
                if item is None:
                    return
                summary.files += 1
                summary.messages += len(item[1])
            inbound_id, indexes = item
            try:
                result = processor.reprocess(inbound_id, indexes=indexes)
            except BridgeError as exc:
                log.warning("reprocess failed", extra={"inbound_id": inbound_id, "error": type(exc).__name__})
                result, failed = None, True
            else:
                failed = False
            with lock:
                if failed:
                    summary.errors += 1
                elif result is None:
                    summary.busy += 1
                else:
                    summary.resolved += result.resolved
                    summary.failed_again += result.failures
                state["done"] += len(indexes)
                if progress is not None:
                    progress(summary, state["done"], total)

    n = max(1, min(workers or ctx.processing.workers, len(by_file)))
    if n == 1:
        work()
    else:
        threads = [threading.Thread(target=work, name=f"ops-reprocess-{k}", daemon=True) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with ctx.db.write() as conn:
        audit(conn, actor, action, target, reason,
              {**(details or {}), "total": total, **summary.as_dict()})
    return summary


def failure_row(db: Database, failure_id: int) -> Any:
    with db.read() as conn:
        row = conn.execute(
            select(failures, inbound_files.c.name.label("file_name"), *_UNIT,
                   inbound_files.c.origin)
            .join(inbound_files, inbound_files.c.id == failures.c.inbound_id)
            .where(failures.c.id == failure_id)).first()
    if row is None:
        raise OpsError(f"no failure with id {failure_id}", 404)
    return row


def reprocess_one(ctx: OpsContext, failure_id: int, *, actor: str, reason: str | None = None) -> ReprocessSummary:
    row = failure_row(ctx.db, failure_id)
    if row.status != "open":
        raise OpsError(f"failure {failure_id} is {row.status}, not open: nothing to reprocess")
    if row.channel not in ctx.channels:
        raise OpsError(f"failure {failure_id}: channel {row.channel!r} is not configured in this process")
    return reprocess_failures(ctx, [failures.c.id == failure_id], actor=actor, reason=reason,
                              target=str(failure_id))


def set_failure_status(db: Database, failure_id: int, status: str, *, actor: str, reason: str) -> None:
    """Mark an open failure ``resolved`` or ``ignored`` with a reason (required)."""
    if status not in ("resolved", "ignored"):
        raise OpsError(f"status must be 'resolved' or 'ignored', not {status!r}", 422)
    if not reason or not reason.strip():
        raise OpsError("a reason is required to resolve or ignore a failure", 422)
    now = utcnow()
    with db.write() as conn:
        n = conn.execute(update(failures).where(failures.c.id == failure_id, failures.c.status == "open")
                         .values(status=status, resolved_at=now, resolved_by=actor[:128], note=reason[:4000],
                                 updated_at=now)).rowcount
        if not n:
            exists = conn.execute(select(failures.c.status).where(failures.c.id == failure_id)).scalar()
            if exists is None:
                raise OpsError(f"no failure with id {failure_id}", 404)
            raise OpsError(f"failure {failure_id} is {exists}, not open")
        audit(conn, actor, f"failures.{'resolve' if status == 'resolved' else 'ignore'}", str(failure_id), reason)


# -- bulk jobs -----------------------------------------------------------------


@dataclass
class Job:
    id: str
    kind: str
    actor: str
    status: str = "running"  # running, done, cancelled, failed
    total: int = 0
    done: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "actor": self.actor, "status": self.status,
                "total": self.total, "done": self.done, "summary": self.summary,
                "created_at": self.created_at, "finished_at": self.finished_at, "error": self.error}


class JobRegistry:
    """Background operator jobs of this process, kept in memory (the newest 200)."""

    KEEP = 200

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, actor: str, work: Callable[[Job], dict[str, Any]]) -> Job:
        job = Job(uuid.uuid4().hex, kind, actor)

        def run() -> None:
            try:
                job.summary = work(job)
                job.status = "cancelled" if job.cancel.is_set() and job.done < job.total else "done"
            except Exception as exc:  # noqa: BLE001 - a job must end in a visible state, never die silently
                log.warning("job failed", extra={"job": job.id, "error": type(exc).__name__})
                job.status, job.error = "failed", type(exc).__name__
            finally:
                job.finished_at = utcnow()

        with self._lock:
            self._jobs[job.id] = job
            for old in list(self._jobs)[: max(0, len(self._jobs) - self.KEEP)]:
                if self._jobs[old].status != "running":
                    del self._jobs[old]
        job.thread = threading.Thread(target=run, name=f"ops-job-{job.id[:8]}", daemon=True)
        job.thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel.set()
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return job


def start_reprocess_job(ctx: OpsContext, jobs: JobRegistry, conds: Sequence[Any], *, actor: str,
                        reason: str | None, action: str = "failures.reprocess", target: str = "filter",
                        details: dict[str, Any] | None = None) -> Job:
    def work(job: Job) -> dict[str, Any]:
        def progress(s: ReprocessSummary, done: int, total: int) -> None:
            job.done, job.total, job.summary = done, total, s.as_dict()

        return reprocess_failures(ctx, conds, actor=actor, reason=reason, action=action, target=target,
                                  details={**(details or {}), "job": job.id}, progress=progress,
                                  cancel=job.cancel).as_dict()

    return jobs.start("reprocess", actor, work)


# -- edit and resubmit -------------------------------------------------------------


def resubmit(ctx: OpsContext, inbound_id: int, data: bytes, *, actor: str, reason: str | None = None,
             name: str | None = None) -> dict[str, Any]:
    """Land corrected bytes as a new version of ``inbound_id`` and process it.

    The original row and bytes are never touched. When the new version has
    processed (``processed`` or ``partial``: its own bad messages are its own
    failures), the original's open failures are resolved as
    ``resubmit:<new id>``.
    """
    with ctx.db.read() as conn:
        orig = conn.execute(select(inbound_files).where(inbound_files.c.id == inbound_id)).first()
    if orig is None:
        raise OpsError(f"no inbound file with id {inbound_id}", 404)
    if not data:
        raise OpsError("the corrected file is empty", 422)
    if orig.channel not in ctx.channels:
        raise OpsError(f"inbound file {inbound_id}: channel {orig.channel!r} is not configured in this process")
    landed = land(ctx.db, ctx.archive, channel=orig.channel, src=io.BytesIO(data), name=name or orig.name,
                  origin=f"resubmit:{inbound_id}", parent_id=inbound_id)
    if landed.duplicate:
        with ctx.db.write() as conn:
            audit(conn, actor, "inbound.resubmit", str(inbound_id), reason,
                  {"new_inbound_id": landed.inbound_id, "duplicate_of": landed.duplicate_of})
        raise OpsError(f"these bytes already landed on channel {orig.channel!r} as inbound file "
                       f"{landed.duplicate_of}: change the file before resubmitting")
    result = ctx.processor().process(landed.inbound_id)
    status = result.status if result is not None else "landed"
    resolved = 0
    with ctx.db.write() as conn:
        if status in ("processed", "partial"):
            now = utcnow()
            resolved = conn.execute(
                update(failures).where(failures.c.inbound_id == inbound_id, failures.c.status == "open")
                .values(status="resolved", resolved_at=now, resolved_by=f"resubmit:{landed.inbound_id}",
                        note=f"superseded by inbound file {landed.inbound_id}", updated_at=now)).rowcount
            conn.execute(update(inbound_files).where(inbound_files.c.id == inbound_id)
                         .values(failure_count=0))
        details = {"new_inbound_id": landed.inbound_id, "sha256": landed.sha256, "size": landed.size,
                   "status": status, "original_failures_resolved": resolved}
        if result is not None:
            details.update(messages=result.messages, records=result.records, failures=result.failures)
        audit(conn, actor, "inbound.resubmit", str(inbound_id), reason, details)
    return {"inbound_id": inbound_id, **details}


# -- crosswalks ------------------------------------------------------------------


def crosswalk_search(db: Database, kind: str | None = None, q: str | None = None, *, active: bool | None = None,
                     limit: int = 100, after_id: int | None = None) -> list[Any]:
    conds: list[Any] = []
    if kind:
        conds.append(crosswalks.c.kind == kind)
    if q:
        pat = "%" + like_escape(q.lower()) + "%"
        conds.append(or_(func.lower(crosswalks.c.source_code).like(pat, escape="\\"),
                         func.lower(crosswalks.c.target_code).like(pat, escape="\\"),
                         func.lower(crosswalks.c.description).like(pat, escape="\\")))
    if active is not None:
        conds.append(crosswalks.c.active == active)
    if after_id is not None:
        conds.append(crosswalks.c.id > after_id)
    with db.read() as conn:
        return list(conn.execute(select(crosswalks).where(*conds)
                                 .order_by(crosswalks.c.kind, crosswalks.c.source_code).limit(limit)).all())


def _fix_conds(kind: str, codes: Iterable[str]) -> list[Any]:
    return [failures.c.category == "master_data", failures.c.kind == kind,
            failures.c.key.in_(sorted(set(codes)))]


def fixable_failures(db: Database, kind: str, codes: Iterable[str]) -> int:
    """How many open master_data failures name ``kind`` and one of ``codes`` that is now active."""
    codes = sorted(set(codes))
    if not codes:
        return 0
    total = 0
    with db.read() as conn:
        for i in range(0, len(codes), 500):
            chunk = codes[i: i + 500]
            active = conn.execute(select(crosswalks.c.source_code).where(
                crosswalks.c.kind == kind, crosswalks.c.active.is_(True),
                crosswalks.c.source_code.in_(chunk))).scalars().all()
            if active:
                total += int(conn.execute(select(func.count()).select_from(failures).where(
                    failures.c.status == "open", *_fix_conds(kind, active))).scalar_one())
    return total


def open_master_data_keys(db: Database, kind: str | None = None, limit: int = 50) -> list[Any]:
    """The missing codes behind open master_data failures, most frequent first: what to add next."""
    conds = [failures.c.status == "open", failures.c.category == "master_data", failures.c.key.is_not(None)]
    if kind:
        conds.append(failures.c.kind == kind)
    with db.read() as conn:
        return list(conn.execute(select(failures.c.kind, failures.c.key, func.count().label("n"))
                                 .where(*conds).group_by(failures.c.kind, failures.c.key)
                                 .order_by(func.count().desc(), failures.c.kind, failures.c.key)
                                 .limit(limit)).all())


def _check_kind(kind: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", kind or ""):
        raise OpsError(f"crosswalk kind {kind!r}: use lowercase letters, digits and '_' "
                       f"(in use: {', '.join(CROSSWALK_KINDS)})", 422)


def crosswalk_add(db: Database, kind: str, entries: list[dict[str, Any]], *, actor: str,
                  reason: str | None = None, action: str = "crosswalks.add") -> dict[str, Any]:
    """Insert or update entries of ``kind``; returns how many and how many open failures they fix."""
    _check_kind(kind)
    for e in entries:
        if not str(e.get("source_code") or "").strip() or not str(e.get("target_code") or "").strip():
            raise OpsError("source_code and target_code must not be empty", 422)
    with db.write() as conn:
        n = xw.upsert_entries(conn, kind, entries, actor=actor[:128])
        shown = [e["source_code"] for e in entries[:20]]
        audit(conn, actor, action, kind, reason, {"count": n, "codes": shown})
    codes = [str(e["source_code"]) for e in entries if e.get("active", True)]
    return {"kind": kind, "count": n, "fixes": fixable_failures(db, kind, codes), "codes": codes}


def crosswalk_deactivate(db: Database, kind: str, source_code: str, *, actor: str,
                         reason: str | None = None) -> None:
    with db.write() as conn:
        if not xw.deactivate(conn, kind, source_code, actor=actor[:128]):
            raise OpsError(f"no {kind} crosswalk entry {source_code!r}", 404)
        audit(conn, actor, "crosswalks.deactivate", f"{kind}:{source_code}", reason)


def crosswalk_import(db: Database, kind: str, text: str, *, actor: str, reason: str | None = None,
                     where: str = "upload") -> dict[str, Any]:
    _check_kind(kind)
    if "\x00" in text:
        raise OpsError(f"{where}: the CSV holds a NUL character", 422)
    try:
        entries = xw.parse_csv(text, where=where)
    except ConfigError as exc:
        raise OpsError(str(exc), 422) from None
    except csv.Error as exc:
        raise OpsError(f"{where}: not a readable CSV ({exc})", 422) from None
    return crosswalk_add(db, kind, entries, actor=actor, reason=reason, action="crosswalks.import")


def reprocess_fixed(ctx: OpsContext, kind: str, codes: Iterable[str], *, actor: str, reason: str | None = None,
                    jobs: JobRegistry | None = None, workers: int | None = None) -> ReprocessSummary | Job:
    """Re-run exactly the open master_data failures of ``kind`` whose key is one of ``codes``."""
    codes = sorted(set(codes))
    if not codes:
        raise OpsError("no codes given", 422)
    conds = _fix_conds(kind, codes)
    details = {"kind": kind, "codes": codes[:50], "code_count": len(codes)}
    if jobs is not None:
        return start_reprocess_job(ctx, jobs, conds, actor=actor, reason=reason,
                                   action="crosswalks.reprocess_fixed", target=kind, details=details)
    return reprocess_failures(ctx, conds, actor=actor, reason=reason, action="crosswalks.reprocess_fixed",
                              target=kind, details=details, workers=workers)


# -- audit ----------------------------------------------------------------------------


def list_audit(db: Database, *, action: str | None = None, actor: str | None = None, target: str | None = None,
               before_id: int | None = None, limit: int = 100) -> list[Any]:
    conds: list[Any] = []
    if action:
        conds.append(audit_log.c.action.like(action.replace("*", "%")))
    if actor:
        conds.append(audit_log.c.actor == actor)
    if target:
        conds.append(audit_log.c.target == target)
    if before_id is not None:
        conds.append(audit_log.c.id < before_id)
    with db.read() as conn:
        return list(conn.execute(select(audit_log).where(*conds).order_by(audit_log.c.id.desc())
                                 .limit(limit)).all())


# -- excerpt with PHI masking -------------------------------------------------------

MASK = "***"
#: CSV columns whose values are patient identifiers (matched case-insensitively, ignoring ' ', '_', '-')
PHI_COLUMNS = frozenset({
    "encounter", "encounterid", "patientencounter", "mrn", "medicalrecordnumber", "patient", "patientid",
    "patientname", "visit", "visitnumber", "visitid", "account", "accountnumber", "ssn", "dob", "birthdate",
    "dateofbirth", "memberid", "subscriberid", "name", "firstname", "lastname",
})
#: HL7 v2 segments carrying patient identity (v2.5.1 ch. 3: PID, PD1, NK1, GT1, IN1/IN2 insured, MRG)
PHI_HL7_SEGMENTS = frozenset({"PID", "PD1", "NK1", "GT1", "IN1", "IN2", "MRG"})
#: X12 segments carrying patient identity (005010X222/X221: NM1 subscriber/patient, DMG, N3/N4 after them)
PHI_X12_NM1 = frozenset({"IL", "QC"})
_EXCERPT_LINES = 2
_MAX_SCAN = 64 * 1024 * 1024


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name.strip().lower())


def _mask_csv_lines(header: str, lines: list[tuple[int, str]], delimiter: str) -> list[tuple[int, str]]:
    cols = next(csv.reader([header], delimiter=delimiter), [])
    phi = {i for i, c in enumerate(cols) if _norm(c) in PHI_COLUMNS}
    out = []
    for no, text in lines:
        if no == 1 or not phi:
            out.append((no, text))
            continue
        cells = next(csv.reader([text], delimiter=delimiter), [])
        cells = [MASK if i in phi and c else c for i, c in enumerate(cells)]
        buf = io.StringIO()
        csv.writer(buf, delimiter=delimiter, lineterminator="").writerow(cells)
        out.append((no, buf.getvalue()))
    return out


def _mask_segment(seg: str, field_sep: str, element_sep: str | None = None) -> str:
    parts = seg.split(field_sep)
    sid = parts[0]
    # "***" would read as empty elements where "*" separates them (X12's usual element separator)
    mask = "[masked]" if "*" in field_sep else MASK
    if element_sep is None:  # HL7 v2: keep the segment id and set id (field 1), mask the rest
        if sid in PHI_HL7_SEGMENTS:
            return field_sep.join(parts[:2] + [mask if p else p for p in parts[2:]])
        if sid == "PV1" and len(parts) > 19 and parts[19]:  # PV1-19 visit number
            parts[19] = mask
        return field_sep.join(parts)
    # X12
    if sid == "NM1" and len(parts) > 1 and parts[1] in PHI_X12_NM1:
        return field_sep.join(parts[:3] + [mask if p else p for p in parts[3:]])
    if sid == "DMG":
        return field_sep.join([sid] + [mask if p else p for p in parts[1:]])
    if sid == "REF" and len(parts) > 2 and parts[1] in ("SY", "1W", "EA"):
        return field_sep.join(parts[:2] + [mask])
    if sid in ("CLM", "CLP") and len(parts) > 1:  # CLM01 / CLP01 patient control number
        return field_sep.join([sid, mask] + parts[2:])
    return seg


def excerpt(archive: Archive, unit: str | Any, position: dict[str, Any], *, phi: bool,
            delimiter: str = ",") -> dict[str, Any]:
    """The raw lines (or segments) around ``position`` in ``unit`` (an ``inbound_files`` row, a failure
    row with its file's columns, or the sha256 of an archive object), PHI masked unless ``phi``.

    Returns ``{"kind": "lines"|"segments"|"none", "lines": [[number, text, is_target], ...]}``.
    CSV and other line formats: the target line +-2 (and the header, for the
    column names). HL7 v2 / X12: the segments of the failing message, the
    failing segment marked. Only the first 64 MB are scanned.
    """
    try:
        fh = archive.open(unit) if isinstance(unit, str) else archive.open_landed(unit)
    except FileNotFoundError:
        return {"kind": "none", "lines": [], "note": "the archived bytes are missing"}
    with fh:
        head = fh.read(512)
        fh.seek(0)
        if head.startswith(b"MSH") or head.startswith(b"\x0bMSH") or head.startswith(b"FHS") or head.startswith(b"BHS"):
            return _hl7_excerpt(fh, position, phi=phi)
        if head.lstrip().startswith(b"ISA"):
            return _x12_excerpt(fh, position, phi=phi)
        line = position.get("line")
        if not isinstance(line, int):
            return {"kind": "none", "lines": []}
        lo, hi = max(1, line - _EXCERPT_LINES), line + _EXCERPT_LINES
        got: list[tuple[int, str]] = []
        header = ""
        scanned = 0
        for no, raw in enumerate(fh, start=1):
            scanned += len(raw)
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if no == 1:
                header = text.lstrip("\ufeff")
            if lo <= no <= hi:
                got.append((no, text[:2000]))
            if no >= hi or scanned > _MAX_SCAN:
                break
    csv_like = delimiter in header
    if not phi:
        if csv_like:
            got = _mask_csv_lines(header, got, delimiter)
        else:
            # no column names to go by (fixed-width, XML): show the shape, never the values
            got = [(no, re.sub(r"[A-Za-z0-9]", "x", text)) for no, text in got]
    return {"kind": "lines", "lines": [[no, text, no == line] for no, text in got],
            "header": header[:2000] if csv_like else None}


def _segments(fh: Any, terminators: bytes) -> Iterable[str]:
    data = fh.read(_MAX_SCAN)
    text = data.decode("utf-8", "replace").replace("\x0b", "").replace("\x1c", "")
    pattern = "[" + re.escape(terminators.decode()) + "]+"
    return (s.strip() for s in re.split(pattern, text) if s.strip())


def _hl7_excerpt(fh: Any, position: dict[str, Any], *, phi: bool) -> dict[str, Any]:
    want = position.get("message")
    want = want if isinstance(want, int) else 0
    msg_no = -1
    seg_no = 0
    out: list[list[Any]] = []
    for seg in _segments(fh, b"\r\n"):
        if seg.startswith(("FHS", "BHS", "BTS", "FTS")):
            continue
        if seg.startswith("MSH"):
            msg_no += 1
            seg_no = 0
            if msg_no > want:
                break
        if msg_no != want:
            continue
        seg_no += 1
        sep = seg[3] if seg.startswith("MSH") and len(seg) > 3 else "|"
        # HL7 positions count segment_index among segments of the same id ("FT1 #2")
        target = seg[:3] == position.get("segment") and (
            position.get("segment_index") in (None, _nth(out, seg[:3]) + 1))
        text = seg if phi else _mask_segment(seg, sep)
        out.append([seg_no, text[:2000], bool(target)])
        if len(out) > 200:
            break
    return {"kind": "segments", "lines": out}


def _nth(out: list[list[Any]], sid: str) -> int:
    return sum(1 for r in out if str(r[1]).startswith(sid))


def _x12_excerpt(fh: Any, position: dict[str, Any], *, phi: bool) -> dict[str, Any]:
    head = fh.read(108).decode("ascii", "replace").lstrip()
    fh.seek(0)
    element = head[3] if len(head) > 3 else "*"
    term = head[105] if len(head) > 105 else "~"
    want = position.get("message")
    want = want if isinstance(want, int) else 0
    st_no = -1
    out: list[list[Any]] = []
    for seg in _segments(fh, term.encode() + b"\r\n"):
        sid = seg.split(element, 1)[0]
        if sid == "ST":
            st_no += 1
            if st_no > want:
                break
        if st_no != want:
            continue
        # X12 positions count segment_index from ST = 1 (999 IK302, the segment position in the set)
        target = sid == position.get("segment") and position.get("segment_index") in (None, len(out) + 1)
        text = seg if phi else _mask_segment(seg, element, element_sep=":")
        out.append([len(out) + 1, text[:2000], bool(target)])
        if sid == "SE" or len(out) > 200:
            break
    return {"kind": "segments", "lines": out}


# -- trace -------------------------------------------------------------------------------


def trace(db: Database, inbound_id: int) -> dict[str, Any]:
    """One file's story on one timeline: landing, versions, failures, records, events, deliveries."""
    with db.read() as conn:
        f = conn.execute(select(inbound_files).where(inbound_files.c.id == inbound_id)).first()
        if f is None:
            raise OpsError(f"no inbound file with id {inbound_id}", 404)
        versions = conn.execute(select(inbound_files.c.id, inbound_files.c.name, inbound_files.c.status,
                                       inbound_files.c.received_at, inbound_files.c.parent_id)
                                .where(or_(inbound_files.c.parent_id == inbound_id,
                                           inbound_files.c.id == (f.parent_id or -1)),
                                       inbound_files.c.duplicate_of.is_(None))
                                .order_by(inbound_files.c.id)).all()
        fails = conn.execute(select(failures).where(failures.c.inbound_id == inbound_id)
                             .order_by(failures.c.message_index).limit(1000)).all()
        recs = conn.execute(select(records.c.id, records.c.type, records.c.natural_key, records.c.message_index,
                                   records.c.version, records.c.created_at, records.c.updated_at)
                            .where(records.c.inbound_id == inbound_id).order_by(records.c.id).limit(1000)).all()
        evs = conn.execute(select(events.c.seq, events.c.id, events.c.event_type, events.c.aggregate_id,
                                  events.c.created_at)
                           .where(events.c.inbound_id == inbound_id).order_by(events.c.seq).limit(1000)).all()
        seqs = [e.seq for e in evs]
        dels = conn.execute(select(deliveries).where(deliveries.c.event_seq.in_(seqs))
                            .order_by(deliveries.c.id)).all() if seqs else []
    timeline: list[dict[str, Any]] = [{"at": f.received_at, "what": "landed", "ref": f"inbound {f.id}",
                                       "detail": f"{f.name} ({f.size} bytes, sha256 {f.sha256[:12]}…)"}]
    if f.processed_at:
        timeline.append({"at": f.processed_at, "what": "processed", "ref": f"inbound {f.id}",
                         "detail": f"{f.status}: {f.message_count} messages, {f.record_count} records"})
    for fl in fails:
        timeline.append({"at": fl.created_at, "what": f"failure ({fl.category})", "ref": f"failure {fl.id}",
                         "detail": f"message {fl.message_index}: {fl.reason}"})
        if fl.resolved_at:
            timeline.append({"at": fl.resolved_at, "what": f"failure {fl.status}", "ref": f"failure {fl.id}",
                             "detail": f"by {fl.resolved_by}"})
    for r in recs:
        timeline.append({"at": r.created_at, "what": "record", "ref": f"{r.type} {r.id}",
                         "detail": f"message {r.message_index}, version {r.version}"})
    for e in evs:
        timeline.append({"at": e.created_at, "what": "event", "ref": f"seq {e.seq}", "detail": e.event_type})
    for d in dels:
        timeline.append({"at": d.delivered_at or d.updated_at, "what": f"delivery {d.status}",
                         "ref": f"{d.destination} #{d.id}",
                         "detail": f"event seq {d.event_seq}, {d.attempts} attempts"
                                   + (f", last error: {d.last_error}" if d.last_error else "")})
    for v in versions:
        if v.id != inbound_id:
            rel = "resubmitted as" if v.parent_id == inbound_id else "resubmission of"
            timeline.append({"at": v.received_at, "what": rel, "ref": f"inbound {v.id}",
                             "detail": f"{v.name} ({v.status})"})
    timeline.sort(key=lambda t: (t["at"], t["what"]))
    return {"file": f, "versions": versions, "failures": fails, "records": recs, "events": evs,
            "deliveries": dels, "timeline": timeline}


# -- dashboard -------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def dashboard(db: Database, settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """Per channel: files and messages in the last hour/day, open failures by category, hourly
    files for a chart, SLA lag (drop -> commit, commit -> delivered) against the channel's ``sla``
    objectives when configured; per destination: backlog and oldest pending age (from the relay)."""
    now = now or utcnow()
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    with db.read() as conn:
        files = conn.execute(select(inbound_files.c.channel, inbound_files.c.received_at,
                                    inbound_files.c.processed_at, inbound_files.c.message_count)
                             .where(inbound_files.c.received_at >= day, inbound_files.c.duplicate_of.is_(None))
                             .limit(100_000)).all()
        fails = conn.execute(select(failures.c.channel, failures.c.category, func.count())
                             .where(failures.c.status == "open")
                             .group_by(failures.c.channel, failures.c.category)).all()
        delivered = conn.execute(
            select(inbound_files.c.channel, events.c.created_at, deliveries.c.delivered_at)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .join(inbound_files, inbound_files.c.id == events.c.inbound_id)
            .where(deliveries.c.delivered_at >= day).limit(100_000)).all()
    channels: dict[str, dict[str, Any]] = {}

    def ch(name: str) -> dict[str, Any]:
        return channels.setdefault(name, {
            "name": name, "files_hour": 0, "files_day": 0, "messages_hour": 0, "messages_day": 0,
            "failures": {c: 0 for c in CATEGORIES}, "hourly": [0] * 24, "commit_lag": [],
            "delivery_lag": []})

    for name in settings.channels:
        ch(name)
    for r in files:
        c = ch(r.channel)
        c["files_day"] += 1
        c["messages_day"] += r.message_count or 0
        if r.received_at >= hour:
            c["files_hour"] += 1
            c["messages_hour"] += r.message_count or 0
        slot = 23 - min(23, int((now - r.received_at).total_seconds() // 3600))
        c["hourly"][slot] += 1
        if r.processed_at is not None:
            c["commit_lag"].append((r.processed_at - r.received_at).total_seconds())
    for name, category, n in fails:
        ch(name)["failures"][category] = ch(name)["failures"].get(category, 0) + int(n)
    for name, created, done in delivered:
        if done is not None:
            ch(name)["delivery_lag"].append((done - created).total_seconds())
    for name, c in channels.items():
        c["failure_list"] = [c["failures"].get(k, 0) for k in CATEGORIES]
        cfg = settings.channels.get(name)
        sla = getattr(cfg, "sla", None) if cfg is not None else None
        for key, obj_name in (("commit_lag", "commit_seconds"), ("delivery_lag", "delivered_seconds")):
            vals = c.pop(key)
            objective = getattr(sla, obj_name, None) if sla is not None else None
            p95 = _pct(vals, 0.95)
            c[key] = {"p50": _pct(vals, 0.5), "p95": p95, "n": len(vals), "objective": objective,
                      "met": None if objective is None or p95 is None else p95 <= objective}
    try:
        from outbox.relay import destination_status

        dests = destination_status(db, list(settings.destinations))
    except ImportError:  # the relay is optional in this slice
        dests = []
    return {"now": now, "channels": sorted(channels.values(), key=lambda c: c["name"]), "destinations": dests}
