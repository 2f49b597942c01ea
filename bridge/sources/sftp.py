"""SFTP source: poll a legacy system's or partner's drop directory, land each complete file, then ack it.

Each source owns one thread and one connection (``bridge.sftp_client``),
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

Transfer: pipelined reads (paramiko's prefetch, ``prefetch_requests`` of
``request_size`` bytes in flight, over a widened channel window) into a temp
file under the local temp dir, the byte count checked against the listing,
then :meth:`Lander.land` streams from that temp file; nothing is held whole in
memory. A long download renews its lease as it goes.
Only after landing committed is the original deleted, moved
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
changed file is a new row and is fetched again.

The jail: remote paths are ``<path>/<entry name>`` with the name one path
segment (``safe_remote_name``); local temp files get names of their own
(``mkstemp``), never the remote one.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import posixpath
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import paramiko
from pydantic import Field, field_validator
from sqlalchemy import and_, bindparam, delete, exc, insert, or_, select, update

from bridge.db import utcnow
from bridge.db.tables import remote_files
from bridge.errors import BridgeError, ConfigError, SourceError, StorageError
from bridge.pipeline.land import CHUNK, Lander
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
#: files leased per database transaction
CLAIM_BATCH = 100
#: files up to this size are read with plain requests, larger ones with pipelined prefetch
SMALL_FILE = 256 * 1024
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
    #: SFTP read requests in flight per download (FIELD-NOTES: 32 to 64)
    prefetch_requests: int = Field(48, ge=1, le=256)
    #: at most this many files per poll, so a huge backlog still lets the loop report and stop
    max_files_per_poll: int = Field(1000, ge=1)
    #: local directory for downloads in progress (default: the archive's tmp/sftp)
    temp_dir: str | None = None

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


class SftpSource(Source):
    """Poll an SFTP directory; land complete files; delete, move or keep the originals."""

    Config = SftpSourceConfig

    def __init__(self, channel: str, config: SourceConfig, lander: Lander) -> None:
        super().__init__(channel, config, lander)
        assert isinstance(config, SftpSourceConfig)
        self.cfg: SftpSourceConfig = config
        self.conn = SftpConnection(config)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.temp_dir = Path(config.temp_dir) if config.temp_dir else lander.archive.tmp / "sftp"
        #: the settle clock; monotonic, never wall time
        self.clock: Callable[[], float] = time.monotonic
        self._seen: dict[str, tuple[int, int, float]] = {}
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
        self.status.extra["fingerprint"] = self.conn.server_fingerprint
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
        known = self._known()
        todo = [e for e in ready if (e.name, e.size, e.mtime) not in known]
        self.status.extra.update(listed=len(listing), ready=len(todo),
                                 deferred=max(0, len(todo) - cfg.max_files_per_poll))
        before = self.status.landed + self.status.duplicates
        file_errors: list[str] = []
        todo = todo[: cfg.max_files_per_poll]
        for i in range(0, len(todo), CLAIM_BATCH):
            if self.stopping:
                break
            file_errors += self._take_batch(sftp, todo[i:i + CLAIM_BATCH])
        if file_errors:
            self.status.last_error, self.status.last_error_at = file_errors[-1], utcnow()
        self.status.extra["connect_attempts"] = self.conn.attempts
        self.status.last_success_at = utcnow()
        self.status.state = "degraded" if file_errors or self._ack_failed_count() else "ok"
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

    # -- leases --------------------------------------------------------------

    def _known(self) -> dict[tuple[str, int, int], str]:
        """(name, size, mtime) of this channel's rows that need no work now ("busy")."""
        now = utcnow()
        base = self.cfg.path.rstrip("/") + "/"
        with self.lander.db.read() as conn:
            rows = conn.execute(
                select(remote_files.c.path, remote_files.c.size, remote_files.c.mtime,
                       remote_files.c.status, remote_files.c.lease_until)
                .where(remote_files.c.channel == self.channel)
            ).all()
        out: dict[tuple[str, int, int], str] = {}
        for path, size, mtime, status, until in rows:
            if not path.startswith(base):
                continue
            if status == "done" or (until is not None and until > now):
                out[(path[len(base):], size, mtime)] = "busy"
        return out

    def _ack_failed_count(self) -> int:
        with self.lander.db.read() as conn:
            return len(conn.execute(
                select(remote_files.c.id).where(remote_files.c.channel == self.channel,
                                                remote_files.c.status == "ack_failed").limit(1000)
            ).all())

    def _claim_batch(self, entries: list[RemoteEntry]) -> list[tuple[RemoteEntry, str, int, int | None]]:
        """Lease a batch of files in one transaction; falls back to one by one on a race."""
        now = utcnow()
        until = now + timedelta(seconds=self.cfg.lease_seconds)
        t = remote_files
        paths = {posixpath.join(self.cfg.path, e.name): e for e in entries}
        out: list[tuple[RemoteEntry, str, int, int | None]] = []
        try:
            with self.lander.db.write() as conn:
                rows = conn.execute(
                    select(t.c.id, t.c.path, t.c.size, t.c.mtime, t.c.status, t.c.inbound_id)
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
                    if row.status == "done":
                        continue
                    # take over an expired lease (a dead process's, or an ack waiting to be retried)
                    taken = conn.execute(
                        update(t).where(t.c.id == row.id, t.c.status == row.status,
                                        or_(t.c.lease_until.is_(None), t.c.lease_until <= now))
                        .values(lease_owner=self.owner, lease_until=until, updated_at=now)
                    ).rowcount
                    if taken == 1:
                        out.append((e, "land" if row.status == "leased" else "ack", row.id, row.inbound_id))
                if new:
                    ids = conn.execute(insert(t).returning(t.c.id, t.c.path, sort_by_parameter_order=True),
                                       new).all()
                    out.extend((paths[r.path], "land", r.id, None) for r in ids)
        except exc.IntegrityError:
            # another process leased one of these first: claim one by one, skipping what it holds
            out = []
            for path, e in paths.items():
                claim = self._claim(path, e)
                if claim is not None:
                    out.append((e, *claim))
        out.sort(key=lambda c: c[0].name)
        return out

    def _claim(self, path: str, entry: RemoteEntry) -> tuple[str, int, int | None] | None:
        """Take the lease of one remote file. Returns (what to do, row id, inbound id) or None."""
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
                    return ("land", new_id, None)
                if row.status == "done":
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
                return ("land" if row.status == "leased" else "ack", row.id, row.inbound_id)
        except exc.IntegrityError:
            return None  # another process inserted the row first: it holds the lease

    def _set(self, row_id: int, **values: Any) -> None:
        values["updated_at"] = utcnow()
        with self.lander.db.write() as conn:
            conn.execute(update(remote_files).where(remote_files.c.id == row_id,
                                                    remote_files.c.lease_owner == self.owner).values(**values))

    def _release(self, row_id: int) -> None:
        """Give a lease back after a failed download: the file is retried on a later poll."""
        with self.lander.db.write() as conn:
            conn.execute(delete(remote_files).where(remote_files.c.id == row_id, remote_files.c.status == "leased",
                                                    remote_files.c.lease_owner == self.owner))

    # -- one file ------------------------------------------------------------

    def _take_batch(self, sftp: paramiko.SFTPClient, entries: list[RemoteEntry]) -> list[str]:
        """Claim, download, land and ack a batch of files; returns the per-file errors.

        The ``done`` marks are written once per batch: a crash before that
        leaves ``leased`` rows whose leases expire, and the file is fetched
        again and lands as a duplicate of itself (``land`` deduplicates by
        sha256), so nothing is lost and nothing is processed twice.
        """
        claims = self._claim_batch(entries)
        errors: list[str] = []
        done: list[tuple[int, int | None]] = []
        pending = list(claims)
        landed_not_acked: dict[int, int] = {}
        try:
            while pending:
                if self.stopping:
                    break
                entry, action, row_id, inbound_id = pending.pop(0)
                path = posixpath.join(self.cfg.path, entry.name)
                if action == "land":
                    try:
                        inbound_id = self._download_and_land(sftp, path, entry, row_id)
                    except _FileError as e:
                        self._release(row_id)
                        errors.append(str(e))
                        continue
                    except BaseException:
                        self._release(row_id)
                        raise
                    landed_not_acked[row_id] = inbound_id
                try:
                    self._ack(sftp, row_id, path, entry, inbound_id)
                except _FileError as e:
                    errors.append(str(e))
                else:
                    done.append((row_id, inbound_id))
                landed_not_acked.pop(row_id, None)
        finally:
            try:
                self._finish(done, landed_not_acked, [c[2] for c in pending if c[1] == "land"])
            except BridgeError:
                log.warning("could not record sftp file states; their leases expire", extra={"channel": self.channel})
        return errors

    def _finish(self, done: list[tuple[int, int | None]], landed: dict[int, int], unstarted: list[int]) -> None:
        """Record a batch's outcome: done rows, landed-but-not-acked rows (acked next poll), unused leases."""
        if not (done or landed or unstarted):
            return
        now = utcnow()
        t = remote_files
        with self.lander.db.write() as conn:
            if done:
                conn.execute(
                    update(t).where(t.c.id == bindparam("b_id"), t.c.lease_owner == self.owner)
                    .values(status="done", inbound_id=bindparam("b_inbound"), lease_until=None, error=None,
                            updated_at=now),
                    [{"b_id": i, "b_inbound": inbound} for i, inbound in done])
            if landed:
                conn.execute(
                    update(t).where(t.c.id == bindparam("b_id"), t.c.lease_owner == self.owner)
                    .values(status="landed", inbound_id=bindparam("b_inbound"), lease_until=now, updated_at=now),
                    [{"b_id": i, "b_inbound": inbound} for i, inbound in landed.items()])
            if unstarted:
                conn.execute(delete(t).where(t.c.id.in_(unstarted), t.c.status == "leased",
                                             t.c.lease_owner == self.owner))

    def _download_and_land(self, sftp: paramiko.SFTPClient, path: str, entry: RemoteEntry, row_id: int) -> int:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.temp_dir, prefix="sftp-", suffix=".part")
        try:
            try:
                with os.fdopen(fd, "wb") as out, sftp.open(path, "rb") as fh:
                    fh.MAX_REQUEST_SIZE = self.cfg.request_size
                    if entry.size > SMALL_FILE:
                        # pipelined reads: up to prefetch_requests 32 KiB requests in flight
                        fh.prefetch(entry.size, max_concurrent_requests=self.cfg.prefetch_requests)
                    got = 0
                    renew_at = RENEW_LEASE_BYTES
                    while got < entry.size and (chunk := fh.read(min(CHUNK, entry.size - got))):
                        out.write(chunk)
                        got += len(chunk)
                        if got >= renew_at:  # a long download keeps its lease
                            renew_at += RENEW_LEASE_BYTES
                            self._set(row_id, lease_until=utcnow() + timedelta(seconds=self.cfg.lease_seconds))
                    out.flush()
            except OSError as e:
                if e.errno in _FILE_ERRNOS:
                    raise _FileError(f"{entry.name!r}: download failed: {describe(e)}") from e
                raise SourceError(f"{entry.name!r}: download from {self.cfg.host}:{self.cfg.port} "
                                  f"failed: {describe(e)}") from e
            except (EOFError, paramiko.SSHException) as e:
                raise SourceError(f"{entry.name!r}: download from {self.cfg.host}:{self.cfg.port} "
                                  f"failed: {describe(e)}") from e
            if got != entry.size or os.path.getsize(tmp) != entry.size:
                raise _FileError(f"{entry.name!r}: got {got} bytes but the listing said {entry.size}; "
                                 "the file changed, retried on a later poll")
            with open(tmp, "rb") as src:
                landed = self.lander.land(channel=self.channel, src=src, name=entry.name,
                                          origin=f"{self.cfg.where}{path}")
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if landed.duplicate:
            self.status.duplicates += 1
        else:
            self.status.landed += 1
        return landed.inbound_id

    def _ack(self, sftp: paramiko.SFTPClient, row_id: int, path: str, entry: RemoteEntry,
             inbound_id: int | None) -> None:
        """Delete, move or keep the original of a landed file; a refusal is recorded, not re-landed."""
        after = self.cfg.after
        marker = path + self.cfg.done_suffix if self.cfg.read_lock == "done_marker" else None
        try:
            if after == "delete":
                sftp.remove(path)
            elif after.startswith("move:"):
                target_dir = posixpath.join(self.cfg.path, after[5:])
                try:
                    sftp.posix_rename(path, posixpath.join(target_dir, entry.name))
                except FileNotFoundError:
                    sftp.mkdir(target_dir)  # the target folder missing, not the file: make it once
                    sftp.posix_rename(path, posixpath.join(target_dir, entry.name))
            if marker is not None and after != "keep":
                try:
                    sftp.remove(marker)
                except FileNotFoundError:
                    pass
        except OSError as e:
            if e.errno not in _FILE_ERRNOS and e.errno is not None:
                self._set(row_id, lease_until=utcnow())
                raise SourceError(f"{entry.name!r}: {after} failed: {describe(e)}") from e
            what = "move" if after.startswith("move:") else after
            message = (f"{entry.name!r} landed (inbound {inbound_id}) but {what} on "
                       f"{self.cfg.host}:{self.cfg.port} failed: {describe(e)}; not landed again, "
                       f"retried in {self.cfg.ack_retry_seconds:g}s")
            self._set(row_id, status="ack_failed", error=message, inbound_id=inbound_id,
                      lease_until=utcnow() + timedelta(seconds=self.cfg.ack_retry_seconds))
            raise _FileError(message) from e
        except (EOFError, paramiko.SSHException) as e:
            self._set(row_id, lease_until=utcnow())  # landed; only the ack is left, next poll
            raise SourceError(f"{entry.name!r}: {after} failed: {describe(e)}") from e


class _FileError(Exception):
    """One file failed (not the connection): reported in the status, the poll goes on."""
