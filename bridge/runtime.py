"""The running process: sources, processors and background services of one ``bridge run``.

``Runtime`` builds every configured channel (parser + mapping + source) at
start-up, so a config error stops start-up before anything is touched. It
then starts:

- one thread per source (each source owns its loop and backs off on its own
  failures, so one broken channel never stalls another);
- ``processing.workers`` processor threads that claim landed files (woken at
  once by a landing, and polling the database for files landed by other
  processes or left behind by a crash);
- the services registered in :data:`SERVICES` (the outbox relay, scheduled jobs).

``stop`` stops sources first (a unit being landed finishes landing), then
lets processors finish their current batch; anything unfinished resumes from
the database at the next start.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
from typing import Any, Protocol

from bridge.db import Database
from bridge.errors import BridgeError
from bridge.pipeline.land import Archive, Landed, Lander
from bridge.pipeline.process import ChannelRuntime, Processor, build_channel, worker_name
from bridge.registry import import_target
from bridge.settings import Settings, build_component
from bridge.sources.base import Source
from mappings.crosswalks import import_csv

__all__ = ["Runtime", "SERVICES", "Service", "freeze_startup_heap"]

log = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Take what start-up allocated (modules, settings, channels, compiled statements) out of the
    cyclic garbage collector's sight, for a long-running process (``bridge run``, ``bridge relay``,
    an API worker).

    Every full collection walks every tracked object; the libraries bridge imports leave a few
    hundred thousand, so while messages flow most of the collector's work was re-walking them.
    Measured with ``bench/ingest_hl7.py``'s commit path on SQLite (50,000 DFT^P03, 2 cores,
    November 2026): 2.52 to 2.83 s of CPU per 10,000 messages before, 2.22 to 2.27 after. Frozen
    objects are still freed by reference counting; only a cycle among them outlives its use, and
    start-up objects live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


#: "module:function" factories called as ``factory(runtime) -> Service | None`` at start
SERVICES: list[str] = [
    "outbox.relay:service_factory",
]


class Runtime:
    def __init__(self, settings: Settings, *, db: Database | None = None, with_sources: bool = True) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        self.archive = Archive(settings.archive_dir)
        self.channels: dict[str, ChannelRuntime] = {
            name: build_channel(name, cfg) for name, cfg in settings.channels.items() if cfg.enabled
        }
        self._wake: queue.Queue[int] = queue.Queue()
        self.lander = Lander(self.db, self.archive, on_landed=self._on_landed)
        self.sources: dict[str, Source] = {}
        if with_sources:
            for name, cfg in settings.channels.items():
                if not cfg.enabled:
                    continue
                cls, config = build_component("source", cfg.source.type, cfg.source.options(),
                                              key=f"channels.{name}.source")
                self.sources[name] = cls(name, config, self.lander, **_source_extras(cls, self))
        self.services: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- lifecycle ----------------------------------------------------------

    def seed_crosswalks(self) -> None:
        for seed in self.settings.crosswalks:
            n = import_csv(self.db, seed.kind, seed.file)
            log.info("crosswalk seeded", extra={"kind": seed.kind, "entries": n})

    def start(self) -> None:
        self.db.upgrade()
        self.seed_crosswalks()
        for i in range(self.settings.processing.workers):
            t = threading.Thread(target=self._work, name=f"processor-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        for name, source in self.sources.items():
            try:
                source.start()
            except BridgeError as exc:
                log.error("source failed to start", extra={"channel": name, "error": str(exc)})
        for target in SERVICES:
            service = import_target(target)(self)
            if service is not None:
                service.start()
                self.services.append(service)
        log.info("runtime started", extra={"channels": sorted(self.channels), "sources": sorted(self.sources)})

    def stop(self, timeout: float = 15.0) -> None:
        for source in self.sources.values():
            source.stop(timeout)
        self._stop.set()
        for _ in self._threads:
            self._wake.put(0)
        for t in self._threads:
            t.join(timeout)
        for service in reversed(self.services):
            service.stop(timeout)
        log.info("runtime stopped")

    # -- processing ---------------------------------------------------------

    def _on_landed(self, landed: Landed) -> None:
        self._wake.put(landed.inbound_id)

    def _work(self) -> None:
        processor = Processor(self.db, self.archive, self.channels, self.settings.processing,
                              owner=worker_name())
        poll = self.settings.processing.poll_seconds
        while not self._stop.is_set():
            try:
                inbound_id = self._wake.get(timeout=poll)
            except queue.Empty:
                inbound_id = None
            if self._stop.is_set():
                break
            try:
                if inbound_id:
                    processor.process(inbound_id)
                # drain whatever else is waiting (other processes, earlier crashes)
                while not self._stop.is_set() and processor.run_once() is not None:
                    pass
            except BridgeError as exc:
                log.error("processing failed", extra={"error": str(exc)})
            except Exception:  # noqa: BLE001 - the worker loop must never die
                log.exception("processing crashed; the file stays claimed until its lease expires")


def _source_extras(cls: type, runtime: Runtime) -> dict[str, Any]:
    """Sources that need more than (channel, config, lander) declare ``needs_runtime = True``."""
    return {"runtime": runtime} if getattr(cls, "needs_runtime", False) else {}
