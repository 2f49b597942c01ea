"""Drop-folder source: files written into a local directory by a legacy system.

Completeness (Camel's read locks, per channel ``read_lock``):

- ``changed`` (default): size and mtime unchanged for ``settle_seconds`` and the
  mtime at least that old. inotify events only wake the loop early: watchdog's
  "closed" event fires for a local writer, a file moved in fires only
  "created", and a polling observer reports half-written files (FIELD-NOTES),
  so readiness is always checked on the file itself, and the folder is
  rescanned every ``rescan_seconds`` whatever the events say.
- ``rename``: the writer writes under a temp name (``ignore`` patterns: dot
  files, ``*.tmp``, ``*.part`` ...) and renames into place; a visible name is complete.
- ``done_marker``: ``NAME`` is taken when ``NAME<done_suffix>`` exists; the marker
  is removed with the original.

After :meth:`Lander.land` returns (the landing committed), the original is
moved to ``archive/<YYYY-MM-DD>/`` inside the folder (``after: move``), deleted
(``after: delete``) or left (``after: keep``, remembered by name, size and mtime).
A file that cannot be read is left in place, reported in the status, and
retried with a growing delay; after ``max_failures`` it goes to ``error/``.

The jail: only regular files directly inside ``path`` are considered (no
symlinks, no subfolders), and every path is built from a directory entry's
own name, so a name with ``..`` or odd characters cannot lead outside.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from bridge.db import utcnow
from bridge.errors import BridgeError
from bridge.sources.base import Source, SourceConfig

__all__ = ["FolderSource", "FolderSourceConfig"]

log = logging.getLogger(__name__)


class FolderSourceConfig(SourceConfig):
    path: Path
    #: glob of the names to take (``*.csv``)
    pattern: str = "*"
    #: names never taken: hidden files and writers' temp names
    ignore: list[str] = Field(default_factory=lambda: [".*", "*.tmp", "*.part", "*.filepart", "~*", "*.swp"])
    read_lock: Literal["changed", "rename", "done_marker"] = "changed"
    settle_seconds: float = Field(0.5, ge=0)
    done_suffix: str = ".done"
    after: Literal["move", "delete", "keep"] = "move"
    archive_subdir: str = "archive"
    error_subdir: str = "error"
    rescan_seconds: float = Field(5.0, gt=0)
    #: use inotify (watchdog) to wake up early; the rescan runs either way
    watch: bool = True
    create: bool = True
    max_failures: int = Field(5, ge=1)


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float
    failures: int = 0
    retry_at: float = 0.0


class FolderSource(Source):
    """Take complete files from a local drop folder; archive originals after landing."""

    Config = FolderSourceConfig
    config: FolderSourceConfig

    def __init__(self, channel: str, config: FolderSourceConfig, lander: Any) -> None:
        super().__init__(channel, config, lander)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._seen: dict[str, _Seen] = {}
        self._kept: set[tuple[str, int, int]] = set()

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        root = self.config.path
        if self.config.create:
            root.mkdir(parents=True, exist_ok=True)
        if self.config.watch:
            self._start_observer(root)
        self._thread = threading.Thread(target=self._loop, name=f"source-{self.channel}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._wake.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout)
            except Exception:  # noqa: BLE001 - stopping must not fail the shutdown
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def _start_observer(self, root: Path) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return
        wake = self._wake

        class _Hint(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                wake.set()

        try:
            observer = Observer()
            observer.schedule(_Hint(), str(root), recursive=False)
            observer.start()
            self._observer = observer
        except OSError as exc:
            # inotify limits reached or an odd filesystem: the rescan still finds everything
            log.warning("folder watch unavailable, polling only", extra={"channel": self.channel, "error": str(exc)})

    # -- the loop -----------------------------------------------------------

    def _loop(self) -> None:
        self.status.state = "running"
        while not self.stopping:
            # clear before scanning: an event during the scan makes the wait return at once
            self._wake.clear()
            try:
                pending = self._scan(time.monotonic())
                self.status.state = "running"
            except OSError as exc:
                pending = False
                self._error(f"cannot list {self.config.path}: {exc.strerror}")
            except Exception as exc:  # noqa: BLE001 - the watcher must never die
                pending = False
                log.exception("folder scan failed", extra={"channel": self.channel})
                self._error(f"scan failed: {type(exc).__name__}")
            # files waiting to settle: look again soon; otherwise sleep until an event or the rescan
            delay = min(0.1, max(self.config.settle_seconds / 4, 0.02)) if pending else self.config.rescan_seconds
            self._wake.wait(delay)

    def _candidates(self) -> list[os.DirEntry[str]]:
        cfg = self.config
        out = []
        with os.scandir(cfg.path) as it:
            for entry in it:
                name = entry.name
                if not entry.is_file(follow_symlinks=False):
                    continue
                if any(fnmatch.fnmatchcase(name, pat) for pat in cfg.ignore):
                    continue
                if cfg.read_lock == "done_marker" and name.endswith(cfg.done_suffix):
                    continue
                if not fnmatch.fnmatchcase(name, cfg.pattern):
                    continue
                out.append(entry)
        out.sort(key=lambda e: e.name)
        return out

    def _scan(self, now: float) -> bool:
        cfg = self.config
        entries = self._candidates()
        names = {e.name for e in entries}
        for gone in set(self._seen) - names:
            del self._seen[gone]
        pending = False
        for entry in entries:
            if self.stopping:
                return False
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if cfg.after == "keep" and (entry.name, st.st_size, st.st_mtime_ns) in self._kept:
                continue
            seen = self._seen.get(entry.name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[entry.name] = seen = _Seen(st.st_size, st.st_mtime_ns, now,
                                                      seen.failures if seen else 0, seen.retry_at if seen else 0.0)
            if seen.retry_at > now:
                pending = True
                continue
            if not self._ready(entry, st, seen, now):
                pending = True
                continue
            self._take(entry, st, seen, now)
        return pending

    def _ready(self, entry: os.DirEntry[str], st: os.stat_result, seen: _Seen, now: float) -> bool:
        cfg = self.config
        if cfg.read_lock == "rename":
            return True
        if cfg.read_lock == "done_marker":
            return os.path.exists(os.path.join(cfg.path, entry.name + cfg.done_suffix))
        age = time.time() - st.st_mtime
        return now - seen.stable_since >= cfg.settle_seconds and age >= cfg.settle_seconds

    def _take(self, entry: os.DirEntry[str], st: os.stat_result, seen: _Seen, now: float) -> None:
        cfg = self.config
        path = Path(cfg.path) / entry.name
        received = utcnow()
        try:
            with open(path, "rb") as fh:
                landed = self.lander.land(channel=self.channel, src=fh, name=entry.name,
                                          origin=f"folder:{path}", received_at=received)
        except FileNotFoundError:
            self._seen.pop(entry.name, None)
            return
        except (OSError, BridgeError) as exc:
            seen.failures += 1
            seen.retry_at = now + min(60.0, 2.0 ** seen.failures)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._error(f"cannot land {entry.name!r}: {reason}")
            if isinstance(exc, OSError) and seen.failures >= cfg.max_failures:
                self._move(path, cfg.error_subdir)
            return
        if landed.duplicate:
            self.status.duplicates += 1
        else:
            self.status.landed += 1
        self.status.last_success_at = utcnow()
        self._seen.pop(entry.name, None)
        self._acknowledge(path, entry.name, st)

    def _acknowledge(self, path: Path, name: str, st: os.stat_result) -> None:
        cfg = self.config
        marker = Path(str(path) + cfg.done_suffix) if cfg.read_lock == "done_marker" else None
        try:
            if cfg.after == "delete":
                path.unlink()
            elif cfg.after == "move":
                self._move(path, cfg.archive_subdir, dated=True)
            else:
                self._kept.add((name, st.st_size, st.st_mtime_ns))
            if marker is not None and cfg.after != "keep":
                marker.unlink(missing_ok=True)
        except OSError as exc:
            # landed already: it is safe in the archive; a retry would only record a duplicate
            self._kept.add((name, st.st_size, st.st_mtime_ns))
            self._error(f"landed {name!r} but could not {cfg.after} the original: {exc.strerror}")

    def _move(self, path: Path, subdir: str, *, dated: bool = False) -> None:
        target_dir = Path(self.config.path) / subdir
        if dated:
            target_dir = target_dir / utcnow().strftime("%Y-%m-%d")
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        n = 1
        while target.exists():
            target = target_dir / f"{path.name}.{n}"
            n += 1
        os.replace(path, target)

    def _error(self, reason: str) -> None:
        self.status.state = "error"
        self.status.last_error = reason
        self.status.last_error_at = utcnow()
        log.warning("folder source error", extra={"channel": self.channel, "reason": reason})
