"""SFTP source: poll a legacy system's or partner's drop directory, land each complete file, then ack it.

Each source owns one thread and one SSH connection (``bridge.sftp_client``),
reused across polls and re-made with jittered, capped backoff when it breaks;
a wrong host key or wrong credentials are reported at once (host,
fingerprint, user) and retried only after ``auth_failure_backoff``.

Completeness, per channel ``read_lock`` (Camel's file-component vocabulary):

- ``changed`` (default): a file is taken once its size and mtime (SFTP v3
  ``ATTRS``, draft-ietf-secsh-filexfer-02 section 5) were the same on two
  listings ``settle_seconds`` apart;
- ``rename``: uploaders write under a temp name (``ignore`` patterns) and
  rename into place, so every visible name is complete;
- ``done_marker``: ``NAME`` is taken when ``NAME<done_suffix>`` exists; the
  marker goes with the original.

Transfer. The listing's size and mtime are all a file needs: nothing is
stat-ed again. Files are taken in batches; each batch runs on up to
``transfer_sessions`` SFTP sessions of the one connection at once, because a
small file is mostly round trips (open, read, close, then remove or rename)
that parallel sessions overlap. A file of at most one request
(``request_size``) is read whole into memory and the batch's small files land
as one group (:func:`~bridge.pipeline.land.land_many`: one durability barrier
for their bytes, one transaction for their rows). A larger file streams with
pipelined reads (paramiko's prefetch, ``prefetch_requests`` requests in flight)
straight into the archive, which hashes it as it writes: no second copy, never
whole in memory, the byte count checked against the listing, the lease renewed
as it goes. Only after landing committed is the original deleted, moved
(``after: move:<dir>``, relative to ``path`` unless absolute, by the OpenSSH
``posix-rename`` extension) or kept (``after: keep``).

Leases (table ``remote_files``, one row per channel, path, size and mtime):
a file is downloaded only by the process holding its row's lease, so several
bridge processes on one PostgreSQL never fetch a file twice, and a dead
process's expired lease is taken over. Row states: ``leased`` (downloading),
``landed`` (landed, original not yet acknowledged), ``done``, and
``ack_failed`` (landed, but delete/move was refused: the error stays in the
row and the status, the file is never landed again, and the ack is retried
every ``ack_retry_seconds``). With ``after: keep`` the ``done`` rows are the
memory of what was fetched: the same (name, size, mtime) is skipped, a
changed file is a new row and is fetched again. Rows are looked up only for
listed files this process has not settled yet (by the unique index): what is
``done``, or leased elsewhere until a known time, is remembered in memory for
as long as it stays listed, so polling an unchanged directory of 10,000 kept
files reads no rows at all.

The jail: remote paths are ``<path>/<entry name>`` with the name one path
segment (``safe_remote_name``); nothing local is named after a remote file.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import math
import os
import posixpath
import queue
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, BinaryIO, Literal, cast

import paramiko
from pydantic import Field, field_validator
from sqlalchemy import and_, bindparam, delete, exc, insert, or_, select, update

from bridge.db import utcnow
from bridge.db.tables import remote_files
from bridge.errors import BridgeError, ConfigError, SourceError, StorageError
from bridge.pipeline.land import Landed, Lander, Unit
from bridge.sftp_client import (
    Backoff,
    SftpConnection,
    SftpConnectionConfig,
    describe,
    safe_remote_name,
)
from bridge.sources.base import Source, SourceConfig

__all__ = ["SftpSource", "SftpSourceConfig"]

log = logging.getLogger(__name__)

#: OSError errnos paramiko maps SFTP status codes to that concern one file, not the connection
_FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM}
#: files leased per database transaction, and landed per group
CLAIM_BATCH = 100
#: a download renews its lease after every this many bytes
RENEW_LEASE_BYTES = 256 * 1024 * 1024


class SftpSourceConfig(SourceConfig, SftpConnectionConfig):
    """``source: {type: sftp, ...}``: connection (see ``SftpConnectionConfig``) plus what to take."""

    #: remote directory to poll
    path: str
    #: glob of the names to take (``*.x12``)
    pattern: str = "*"
    #: names never taken: hidden files and uploaders' temp names
    ignore: list[str] = Field(default_factory=lambda: [".*", "*.tmp", "*.part", "*.filepart", "~*"])
    read_lock: Literal["changed", "rename", "done_marker"] = "changed"
    settle_seconds: float = Field(5.0, ge=0)
    done_suffix: str = ".done"
    #: ``delete``, ``keep`` or ``move:<dir>``
    after: str
    poll_interval: float = Field(10.0, gt=0)
    #: how long a download lease holds before another process may take the file over
    lease_seconds: float = Field(900.0, gt=0)
    #: wait before retrying a refused delete/move of an already landed file
    ack_retry_seconds: float = Field(300.0, gt=0)
    #: SFTP read requests in flight per large-file download (FIELD-NOTES: 32 to 64)
    prefetch_requests: int = Field(48, ge=1, le=256)
    #: SFTP sessions (channels of the one connection) transferring files at once; OpenSSH
    #: allows 10 per connection by default (``MaxSessions``), a refused one is simply not used
    transfer_sessions: int = Field(4, ge=1, le=10)
    #: at most this many files per poll, so a huge backlog still lets the loop report and stop
    max_files_per_poll: int = Field(1000, ge=1)

    @field_validator("after")
    @classmethod
    def _check_after(cls, v: str) -> str:
        if v in ("delete", "keep"):
            return v
        if v.startswith("move:") and v[5:].strip("/"):
            return v
        raise ValueError("after must be delete, keep or move:<dir>")

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        return posixpath.normpath(v) if v else v


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    name: str
    size: int
    mtime: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.name, self.size, self.mtime)


@dataclass(slots=True, eq=False)
class _Claim:
    """One leased file on its way: downloaded (``data`` for a small one), landed, acknowledged."""

    entry: RemoteEntry
    #: ``land`` (download, land, ack) or ``ack`` (landed before; only the delete/move is left)
    action: Literal["land", "ack"]
    row_id: int
    inbound_id: int | None = None
    data: bytes | None = None
    landed: Landed | None = None


@dataclass(slots=True)
class _Outcome:
    """What a batch did, recorded in ``remote_files`` once at its end."""

    errors: list[str] = field(default_factory=list)
    done: list[_Claim] = field(default_factory=list)
    #: landed (or only waiting for the ack) but not acknowledged: acked on a later poll
    unacked: list[_Claim] = field(default_factory=list)
    #: leases given back: the download failed or never started
    released: list[_Claim] = field(default_factory=list)
    #: the first failure of the connection (or the database); raised once the batch is recorded
    fatal: BaseException | None = None


@dataclass(slots=True, eq=False)
class _Batch:
    """Up to ``CLAIM_BATCH`` claimed files, landed as one group; its small files fetching meanwhile."""

    claims: list[_Claim]
    out: _Outcome = field(default_factory=_Outcome)
    #: the download of the small files: the claims fetched whole
    fetching: Future[list[_Claim]] | None = None

    def small(self, request_size: int) -> list[_Claim]:
        return [c for c in self.claims if c.action == "land" and c.entry.size <= request_size]

    def large(self, request_size: int) -> list[_Claim]:
        return [c for c in self.claims if c.action == "land" and c.entry.size > request_size]


class _Sessions:
    """A poll's SFTP sessions, each lent to one thread at a time (paramiko's ``SFTPClient`` is not thread-safe)."""

    def __init__(self, sessions: list[paramiko.SFTPClient]) -> None:
        self.count = len(sessions)
        self._free: queue.SimpleQueue[paramiko.SFTPClient] = queue.SimpleQueue()
        for s in sessions:
            self._free.put(s)

    @contextlib.contextmanager
    def lend(self) -> Iterator[paramiko.SFTPClient]:
        sftp = self._free.get()
        try:
            yield sftp
        finally:
            self._free.put(sftp)


class _NotStarted(Exception):
    """A file's turn never came: the connection broke first, or the source is stopping."""


class _FileError(Exception):
    """One file failed (not the connection): reported in the status, the poll goes on."""


class SftpSource(Source):
    """Poll an SFTP directory; land complete files; delete, move or keep the originals."""

    Config = SftpSourceConfig

    def __init__(self, channel: str, config: SourceConfig, lander: Lander) -> None:
        super().__init__(channel, config, lander)
        assert isinstance(config, SftpSourceConfig)
        self.cfg: SftpSourceConfig = config
        self.conn = SftpConnection(config)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: the settle clock; monotonic, never wall time
        self.clock: Callable[[], float] = time.monotonic
        self._seen: dict[str, tuple[int, int, float]] = {}
        #: listed files that need no work until a monotonic time (inf: ``done``), with their row status
        self._settled: dict[tuple[str, int, int], tuple[float, str]] = {}
        self._thread: threading.Thread | None = None
        self.status.extra.update(where=f"{config.where}{config.path}", connect_attempts=0)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sftp-{self.channel}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        self.conn.close()
        self.status.state = "stopped"

    def _run(self) -> None:
        backoff = Backoff(self.cfg.reconnect_initial, self.cfg.reconnect_max)
        while not self.stopping:
            try:
                self.poll_once()
                backoff.reset()
                wait = self.cfg.poll_interval
            except (SourceError, ConfigError) as e:
                self.conn.close()
                retryable = isinstance(e, SourceError) and e.retryable
                self._error(str(e), "error" if retryable else "refused")
                wait = backoff.next() if retryable else self.cfg.auth_failure_backoff
            except StorageError as e:
                self._error(str(e), "error")
                wait = backoff.next()
            except Exception as e:  # noqa: BLE001 - the loop never dies
                log.exception("sftp poll crashed", extra={"channel": self.channel})
                self.conn.close()
                self._error(f"unexpected {type(e).__name__}", "error")
                wait = backoff.next()
            self.status.extra["next_retry_in"] = round(wait, 3)
            self._stop.wait(wait)

    def _error(self, message: str, state: str) -> None:
        self.status.state = state
        self.status.last_error = message
        self.status.last_error_at = utcnow()
        self.status.extra["connect_attempts"] = self.conn.attempts
        log.warning("sftp source error", extra={"channel": self.channel, "error": message})

    # -- one poll ------------------------------------------------------------

    def poll_once(self) -> int:
        """List, take every complete file, ack it. Returns how many files were landed."""
        cfg = self.cfg
        if not self.conn.connected:
            self.status.state = "connecting"
        try:
            sftp = self.conn.sftp()
        finally:
            self.status.extra["connect_attempts"] = self.conn.attempts
        self.status.extra.update(fingerprint=self.conn.server_fingerprint, cipher=self.conn.cipher)
        try:
            listing = sftp.listdir_attr(cfg.path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise SourceError(f"remote directory {cfg.path!r} not found on {cfg.host}:{cfg.port}") from e
            if e.errno in (errno.EACCES, errno.EPERM):
                raise SourceError(f"remote directory {cfg.path!r} on {cfg.host}:{cfg.port}: permission denied") from e
            raise SourceError(f"listing {cfg.path!r} on {cfg.host}:{cfg.port} failed: {describe(e)}") from e
        except (EOFError, paramiko.SSHException) as e:
            raise SourceError(f"listing {cfg.path!r} on {cfg.host}:{cfg.port} failed: {describe(e)}") from e
        ready = self._complete(listing)
        todo = self._unsettled(ready)
        self.status.extra.update(listed=len(listing), ready=len(todo),
                                 deferred=max(0, len(todo) - cfg.max_files_per_poll))
        before = self.status.landed + self.status.duplicates
        file_errors = self._take(todo[: cfg.max_files_per_poll]) if todo else []
        if file_errors:
            self.status.last_error, self.status.last_error_at = file_errors[-1], utcnow()
        self.status.extra["connect_attempts"] = self.conn.attempts
        self.status.last_success_at = utcnow()
        waiting = sum(1 for _, row_status in self._settled.values() if row_status == "ack_failed")
        self.status.extra["ack_failed"] = waiting
        self.status.state = "degraded" if file_errors or waiting else "ok"
        return self.status.landed + self.status.duplicates - before

    def _complete(self, listing: list[paramiko.SFTPAttributes]) -> list[RemoteEntry]:
        """The entries that are complete files by this channel's read lock, in name order."""
        cfg = self.cfg
        files: dict[str, RemoteEntry] = {}
        names: set[str] = set()
        for a in listing:
            name = a.filename
            names.add(name)
            if not safe_remote_name(name) or a.st_mode is None or not stat.S_ISREG(a.st_mode):
                continue
            if not fnmatch.fnmatchcase(name, cfg.pattern) or any(fnmatch.fnmatchcase(name, p) for p in cfg.ignore):
                continue
            if cfg.read_lock == "done_marker" and name.endswith(cfg.done_suffix):
                continue
            files[name] = RemoteEntry(name, int(a.st_size or 0), int(a.st_mtime or 0))
        if cfg.read_lock == "rename":
            ready = list(files.values())
        elif cfg.read_lock == "done_marker":
            ready = [e for n, e in files.items() if n + cfg.done_suffix in names]
        else:
            now = self.clock()
            ready = []
            seen: dict[str, tuple[int, int, float]] = {}
            for n, e in files.items():
                prev = self._seen.get(n)
                if prev is not None and prev[:2] == (e.size, e.mtime):
                    seen[n] = prev
                    if now - prev[2] >= cfg.settle_seconds:
                        ready.append(e)
                else:
                    seen[n] = (e.size, e.mtime, now)
                    if cfg.settle_seconds == 0:
                        ready.append(e)
            self._seen = seen
        ready.sort(key=lambda e: e.name)
        return ready

    def _unsettled(self, ready: list[RemoteEntry]) -> list[RemoteEntry]:
        """The ready files that may need work; forgets settled files that are no longer listed."""
        listed = {e.key for e in ready}
        self._settled = {k: v for k, v in self._settled.items() if k in listed}
        now = time.monotonic()
        return [e for e in ready if self._settled.get(e.key, (0.0, ""))[0] <= now]

    def _settle(self, entry: RemoteEntry, status: str, until: Any = None) -> None:
        """Remember that a file needs no work (``done``) or none before its row's ``lease_until``."""
        if status == "done":
            self._settled[entry.key] = (math.inf, status)
        elif until is not None:
            self._settled[entry.key] = (time.monotonic() + (until - utcnow()).total_seconds(), status)

    # -- leases --------------------------------------------------------------

    def _claim_batch(self, entries: list[RemoteEntry]) -> list[_Claim]:
        """Lease a batch of files in one transaction; falls back to one by one on a race."""
        now = utcnow()
        until = now + timedelta(seconds=self.cfg.lease_seconds)
        t = remote_files
        paths = {self._path(e): e for e in entries}
        out: list[_Claim] = []
        try:
            with self.lander.db.write() as conn:
                rows = conn.execute(
                    select(t.c.id, t.c.path, t.c.size, t.c.mtime, t.c.status, t.c.inbound_id, t.c.lease_until)
                    .where(t.c.channel == self.channel, t.c.path.in_(list(paths)))
                ).all()
                existing = {(r.path, r.size, r.mtime): r for r in rows}
                new: list[dict[str, Any]] = []
                for path, e in paths.items():
                    row = existing.get((path, e.size, e.mtime))
                    if row is None:
                        new.append({"channel": self.channel, "path": path, "size": e.size, "mtime": e.mtime,
                                    "status": "leased", "lease_owner": self.owner, "lease_until": until,
                                    "updated_at": now})
                        continue
                    if row.status == "done" or (row.lease_until is not None and row.lease_until > now):
                        self._settle(e, row.status, row.lease_until)
                        continue
                    # take over an expired lease (a dead process's, or an ack waiting to be retried)
                    taken = conn.execute(
                        update(t).where(t.c.id == row.id, t.c.status == row.status,
                                        or_(t.c.lease_until.is_(None), t.c.lease_until <= now))
                        .values(lease_owner=self.owner, lease_until=until, updated_at=now)
                    ).rowcount
                    if taken == 1:
                        out.append(_Claim(e, "land" if row.status == "leased" else "ack", row.id, row.inbound_id))
                if new:
                    ids = conn.execute(insert(t).returning(t.c.id, t.c.path, sort_by_parameter_order=True),
                                       new).all()
                    out.extend(_Claim(paths[r.path], "land", r.id) for r in ids)
        except exc.IntegrityError:
            # another process leased one of these first: claim one by one, skipping what it holds
            out = [c for path, e in paths.items() if (c := self._claim(path, e)) is not None]
        out.sort(key=lambda c: c.entry.name)
        return out

    def _claim(self, path: str, entry: RemoteEntry) -> _Claim | None:
        """Take the lease of one remote file, or None when another process holds it or it is done."""
        now = utcnow()
        until = now + timedelta(seconds=self.cfg.lease_seconds)
        key = and_(remote_files.c.channel == self.channel, remote_files.c.path == path,
                   remote_files.c.size == entry.size, remote_files.c.mtime == entry.mtime)
        try:
            with self.lander.db.write() as conn:
                row = conn.execute(
                    select(remote_files.c.id, remote_files.c.status, remote_files.c.inbound_id).where(key)
                ).first()
                if row is None:
                    new_id = conn.execute(
                        insert(remote_files).returning(remote_files.c.id),
                        {"channel": self.channel, "path": path, "size": entry.size, "mtime": entry.mtime,
                         "status": "leased", "lease_owner": self.owner, "lease_until": until, "updated_at": now},
                    ).scalar_one()
                    return _Claim(entry, "land", new_id)
                if row.status == "done":
                    self._settle(entry, "done")
                    return None
                # take over an expired lease (a dead process's, or an ack waiting to be retried)
                taken = conn.execute(
                    update(remote_files)
                    .where(remote_files.c.id == row.id, remote_files.c.status == row.status,
                           or_(remote_files.c.lease_until.is_(None), remote_files.c.lease_until <= now))
                    .values(lease_owner=self.owner, lease_until=until, updated_at=now)
                ).rowcount
                if taken != 1:
                    return None
                return _Claim(entry, "land" if row.status == "leased" else "ack", row.id, row.inbound_id)
        except exc.IntegrityError:
            return None  # another process inserted the row first: it holds the lease

    def _set(self, row_id: int, **values: Any) -> None:
        values["updated_at"] = utcnow()
        with self.lander.db.write() as conn:
            conn.execute(update(remote_files).where(remote_files.c.id == row_id,
                                                    remote_files.c.lease_owner == self.owner).values(**values))

    def _finish(self, out: _Outcome) -> None:
        """Record a batch's outcome in one transaction: done rows, unacknowledged rows, leases given back.

        The ``done`` marks are written once per batch: a crash before that
        leaves ``leased`` rows whose leases expire, and the file is fetched
        again and lands as a duplicate of itself (``land`` deduplicates by
        sha256), so nothing is lost and nothing is processed twice.
        """
        if not (out.done or out.unacked or out.released):
            return
        now = utcnow()
        t = remote_files
        mark = update(t).where(t.c.id == bindparam("b_id"), t.c.lease_owner == self.owner)
        with self.lander.db.write() as conn:
            if out.done:
                conn.execute(mark.values(status="done", inbound_id=bindparam("b_inbound"), lease_until=None,
                                         error=None, updated_at=now),
                             [{"b_id": c.row_id, "b_inbound": c.inbound_id} for c in out.done])
            if out.unacked:
                conn.execute(mark.values(status="landed", inbound_id=bindparam("b_inbound"), lease_until=now,
                                         updated_at=now),
                             [{"b_id": c.row_id, "b_inbound": c.inbound_id} for c in out.unacked])
            if out.released:
                conn.execute(delete(t).where(t.c.id.in_([c.row_id for c in out.released]), t.c.status == "leased",
                                             t.c.lease_owner == self.owner))
        for c in out.done:
            self._settle(c.entry, "done")

    # -- batches -------------------------------------------------------------

    def _take(self, entries: list[RemoteEntry]) -> list[str]:
        """Claim, download, land and ack files batch by batch; returns the per-file errors.

        Batches overlap: while one batch lands (archive writes and fsyncs, one
        transaction) and is acknowledged, the next one's small files download,
        so the disk and the network are busy at the same time (and at most two
        batches of small files, 2 x 100 x ``request_size``, are in memory). A failure of the
        connection or the database stops the poll once every batch in flight is
        recorded.
        """
        errors: list[str] = []
        sessions = _Sessions(self.conn.sessions(self.cfg.transfer_sessions))
        pending: _Batch | None = None
        with ThreadPoolExecutor(1, thread_name_prefix=f"sftp-{self.channel}-fetch") as fetcher:
            try:
                for i in range(0, len(entries), CLAIM_BATCH):
                    if self.stopping:
                        break
                    batch = _Batch(self._claim_batch(entries[i:i + CLAIM_BATCH]))
                    batch.fetching = fetcher.submit(self._each, sessions, self._fetch,
                                                    batch.small(self.cfg.request_size), batch.out)
                    previous, pending = pending, batch
                    if previous is not None:
                        errors += self._land_and_ack(sessions, previous)
                last, pending = pending, None
                if last is not None:
                    errors += self._land_and_ack(sessions, last)
            except BaseException:
                if pending is not None:
                    self._abandon(pending)
                raise
        return errors

    def _land_and_ack(self, sessions: _Sessions, batch: _Batch) -> list[str]:
        """Land and ack a batch whose small files were fetched; stream, land and ack its large ones.

        A broken connection stops the batch: what landed stays landed and is
        acked on a later poll, what did not is given back, and the error is
        raised once all of it is recorded.
        """
        out, claims = batch.out, batch.claims
        try:
            assert batch.fetching is not None
            fetched = batch.fetching.result()
            if fetched:
                self._land_group(fetched)
            self._ack_all(sessions, fetched + [c for c in claims if c.action == "ack"], out)
            self._ack_all(sessions, self._each(sessions, self._stream, batch.large(self.cfg.request_size), out), out)
        except BaseException as e:
            # the database or the archive failed while landing the group: none of it committed
            out.fatal = e
            out.released += [c for c in claims if c.action == "land" and c.landed is None
                             and c not in out.released]
        finally:
            self._record(batch)
        if out.fatal is not None:
            raise out.fatal
        return out.errors

    def _abandon(self, batch: _Batch) -> None:
        """Give back a batch that was fetching when the poll failed: its files are taken next poll."""
        if batch.fetching is not None:
            with contextlib.suppress(BaseException):
                batch.fetching.result()
        batch.out.released += [c for c in batch.claims if c.action == "land" and c not in batch.out.released]
        batch.out.unacked += [c for c in batch.claims if c.action == "ack" and c not in batch.out.unacked]
        self._record(batch)

    def _record(self, batch: _Batch) -> None:
        for c in batch.claims:
            c.data = None
            if c.landed is not None and c.action == "land":
                if c.landed.duplicate:
                    self.status.duplicates += 1
                else:
                    self.status.landed += 1
        try:
            self._finish(batch.out)
        except BridgeError:
            log.warning("could not record sftp file states; their leases expire", extra={"channel": self.channel})

    def _each(self, sessions: _Sessions, work: Callable[[paramiko.SFTPClient, _Claim], None],
              claims: list[_Claim], out: _Outcome) -> list[_Claim]:
        """Run ``work`` on each claim, on the poll's sessions at once; return the claims it did.

        Every started file finishes before this returns.
        """
        if not claims or out.fatal is not None:
            out.released += [c for c in claims if c.action == "land"]
            return []
        broken = threading.Event()

        def one(claim: _Claim) -> BaseException | None:
            if broken.is_set() or self.stopping:
                return _NotStarted()
            try:
                with sessions.lend() as sftp:
                    work(sftp, claim)
                return None
            except _FileError as e:
                return e
            except BaseException as e:  # noqa: BLE001 - the connection or the database: stop the others
                broken.set()
                return e

        workers = min(sessions.count, len(claims))
        if workers == 1:
            results = [one(c) for c in claims]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix=f"sftp-{self.channel}") as pool:
                results = list(pool.map(one, claims))
        succeeded: list[_Claim] = []
        for claim, error in zip(claims, results, strict=True):
            if error is None:
                succeeded.append(claim)
                continue
            if isinstance(error, _FileError):
                out.errors.append(str(error))
            elif not isinstance(error, _NotStarted) and out.fatal is None:
                out.fatal = error
            if claim.landed is None and claim.action == "land":
                out.released.append(claim)
            elif not isinstance(error, _FileError):  # a refused ack is already recorded as ack_failed
                out.unacked.append(claim)
        return succeeded

    def _ack_all(self, sessions: _Sessions, claims: list[_Claim], out: _Outcome) -> None:
        """Ack landed claims; those whose ack never ran stay ``landed`` for a later poll."""
        if out.fatal is not None:
            out.unacked += claims
        elif self.cfg.after == "keep":
            out.done += claims  # nothing to do on the server (a done-marker stays with its file)
        else:
            out.done += self._each(sessions, self._ack_one, claims, out)

    # -- one file ------------------------------------------------------------

    def _path(self, entry: RemoteEntry) -> str:
        return posixpath.join(self.cfg.path, entry.name)

    @contextlib.contextmanager
    def _remote(self, entry: RemoteEntry, what: str) -> Iterator[None]:
        """Translate a failed SFTP call: a file's own error (gone, refused) or the connection's."""
        try:
            yield
        except OSError as e:
            if e.errno in _FILE_ERRNOS:
                raise _FileError(f"{entry.name!r}: {what} failed: {describe(e)}") from e
            raise SourceError(f"{entry.name!r}: {what} from {self.cfg.host}:{self.cfg.port} "
                              f"failed: {describe(e)}") from e
        except (EOFError, paramiko.SSHException) as e:
            raise SourceError(f"{entry.name!r}: {what} from {self.cfg.host}:{self.cfg.port} "
                              f"failed: {describe(e)}") from e

    def _open(self, sftp: paramiko.SFTPClient, entry: RemoteEntry) -> paramiko.SFTPFile:
        with self._remote(entry, "download"):
            fh = sftp.open(self._path(entry), "rb")
        fh.MAX_REQUEST_SIZE = self.cfg.request_size
        return fh

    def _fetch(self, sftp: paramiko.SFTPClient, claim: _Claim) -> None:
        """Read a small file whole (one request): its bytes land with the batch's group."""
        entry = claim.entry
        fh = self._open(sftp, entry)
        try:
            with self._remote(entry, "download"):
                data = fh.read(entry.size) if entry.size else b""
        finally:
            _close_quietly(fh)
        if len(data) != entry.size:
            raise _FileError(_changed(entry, len(data)))
        claim.data = data

    def _land_group(self, claims: list[_Claim]) -> None:
        units = [Unit(c.data or b"", c.entry.name, f"{self.cfg.where}{self._path(c.entry)}") for c in claims]
        group = self.lander.land_many(channel=self.channel, units=units)
        for claim, landed in zip(claims, group, strict=True):
            claim.landed, claim.inbound_id = landed, landed.inbound_id

    def _stream(self, sftp: paramiko.SFTPClient, claim: _Claim) -> None:
        """Download a large file straight into the archive, pipelined, and land it."""
        entry = claim.entry
        fh = self._open(sftp, entry)
        try:
            _prefetch(fh, entry.size, self.cfg.prefetch_requests)
            src = _RemoteReader(fh, entry, self._remote, lambda: self._set(
                claim.row_id, lease_until=utcnow() + timedelta(seconds=self.cfg.lease_seconds)))
            landed = self.lander.land(channel=self.channel, src=cast(BinaryIO, src), name=entry.name,
                                      origin=f"{self.cfg.where}{self._path(entry)}")
        finally:
            _close_quietly(fh)
        claim.landed, claim.inbound_id = landed, landed.inbound_id

    def _ack_one(self, sftp: paramiko.SFTPClient, claim: _Claim) -> None:
        """Delete, move or keep the original of a landed file; a refusal is recorded, not re-landed."""
        after = self.cfg.after
        entry, row_id, inbound_id = claim.entry, claim.row_id, claim.inbound_id
        path = self._path(entry)
        marker = path + self.cfg.done_suffix if self.cfg.read_lock == "done_marker" else None
        try:
            if after == "delete":
                sftp.remove(path)
            elif after.startswith("move:"):
                target_dir = posixpath.join(self.cfg.path, after[5:])
                try:
                    sftp.posix_rename(path, posixpath.join(target_dir, entry.name))
                except FileNotFoundError:
                    with contextlib.suppress(OSError):  # another session may have made it first
                        sftp.mkdir(target_dir)  # the target folder missing, not the file: make it once
                    sftp.posix_rename(path, posixpath.join(target_dir, entry.name))
            if marker is not None and after != "keep":
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove(marker)
        except OSError as e:
            if e.errno not in _FILE_ERRNOS and e.errno is not None:
                raise SourceError(f"{entry.name!r}: {after} failed: {describe(e)}") from e
            what = "move" if after.startswith("move:") else after
            message = (f"{entry.name!r} landed (inbound {inbound_id}) but {what} on "
                       f"{self.cfg.host}:{self.cfg.port} failed: {describe(e)}; not landed again, "
                       f"retried in {self.cfg.ack_retry_seconds:g}s")
            until = utcnow() + timedelta(seconds=self.cfg.ack_retry_seconds)
            self._set(row_id, status="ack_failed", error=message, inbound_id=inbound_id, lease_until=until)
            self._settle(entry, "ack_failed", until)
            raise _FileError(message) from e
        except (EOFError, paramiko.SSHException) as e:
            raise SourceError(f"{entry.name!r}: {after} failed: {describe(e)}") from e


class _RemoteReader:
    """A remote file as ``Archive.store`` reads it: exactly the listed bytes, errors translated, lease renewed.

    Reads one request's worth at a time: paramiko joins the pieces of a
    larger read by repeated concatenation.
    """

    def __init__(self, fh: paramiko.SFTPFile, entry: RemoteEntry,
                 remote: Callable[[RemoteEntry, str], contextlib.AbstractContextManager[None]],
                 renew: Callable[[], None]) -> None:
        self._fh, self._entry, self._remote, self._renew = fh, entry, remote, renew
        self._got = 0
        self._renew_at = RENEW_LEASE_BYTES

    def read(self, n: int = -1) -> bytes:
        left = self._entry.size - self._got
        if left <= 0:
            return b""
        want = min(left, self._fh.MAX_REQUEST_SIZE if n < 0 else min(n, self._fh.MAX_REQUEST_SIZE))
        with self._remote(self._entry, "download"):
            chunk = self._fh.read(want)
        if not chunk:
            raise _FileError(_changed(self._entry, self._got))
        self._got += len(chunk)
        if self._got >= self._renew_at:  # a long download keeps its lease
            self._renew_at += RENEW_LEASE_BYTES
            self._renew()
        return chunk


def _changed(entry: RemoteEntry, got: int) -> str:
    return (f"{entry.name!r}: got {got} bytes but the listing said {entry.size}; "
            "the file changed, retried on a later poll")


def _close_quietly(fh: paramiko.SFTPFile) -> None:
    """Close a remote handle; a failure here changes nothing (the bytes were checked, or the error raised)."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        fh.close()
    f: Any = fh
    with f._prefetch_lock:  # a prefetch thread waiting for room (the connection died) sees the handle closed
        f._prefetch_extents.clear()


def _prefetch(fh: paramiko.SFTPFile, size: int, max_requests: int) -> None:
    """paramiko's pipelined prefetch of ``fh`` up to ``size``, with two of its races closed.

    paramiko marks a prefetch done whenever no request is in flight, which happens whenever the
    server answers before its thread has sent the next request (always with one request in flight,
    now and then with more). The reader then falls back to one synchronous request per round
    trip, while the thread goes on requesting the rest of the file into a buffer nobody reads
    (memory up to the file's size) and outlives the handle, dying with "Socket is closed" in a
    thread of its own once the connection closes. Here "done" stands only once the thread has
    sent every request, and the thread stops at the first request after the handle closed; a
    connection error in it is left to the reader, which meets the same error.
    """
    f: Any = fh  # paramiko's private prefetch state, untyped in its stubs
    unsent = [1]  # requests not yet in flight, the one being sent included (an upper bound)
    original_thread, original_response = f._prefetch_thread, f._async_response

    def chunks(planned: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        for i, chunk in enumerate(planned):
            unsent[0] = len(planned) - i
            if f._closed:
                break
            yield chunk  # paramiko resumes this only after the previous request is in flight
        unsent[0] = 0

    def _prefetch_thread(planned: list[tuple[int, int]], limit: int | None) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            original_thread(chunks(planned), limit)

    def _async_response(t: int, msg: paramiko.Message, num: int) -> None:
        original_response(t, msg, num)
        if unsent[0]:
            with f._prefetch_lock:
                f._prefetch_done = False

    f._prefetch_thread, f._async_response = _prefetch_thread, _async_response
    fh.prefetch(size, max_concurrent_requests=max_requests)
