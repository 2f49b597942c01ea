"""Serving the API with uvicorn: in the ``bridge run`` process, or in ``api.workers`` worker processes.

With ``api.workers: 1`` (the default) uvicorn serves the app inside the
``bridge run`` process, beside its sources, processors and relay.

One Python process serves one request at a time per core it can get (the
GIL), so reads at scale want several. With ``api.workers: N > 1`` the
``bridge run`` process binds the listening socket itself and starts N worker
processes that each build their own app and database engine and accept on
that one socket (the kernel spreads connections among them). Workers are
started with ``spawn``, not ``fork``: the parent has threads running, and a
forked child would inherit their locks mid-state. A worker that dies is started
again; SIGTERM or SIGINT stops every worker (uvicorn's graceful shutdown:
requests in flight finish) before the runtime stops.

What is per process, and what is shared, with several workers:

- rate limits are shared: the token buckets are in shared memory created
  here and handed to each worker (:mod:`bridge.api.ratelimit`);
- the API-key cache is per worker (:mod:`bridge.api.keys`): a revocation is
  seen by every worker within ``CACHE_SECONDS``, as it already was for a
  revocation made by another process;
- ``/metrics``: the API request counters are those of the worker that
  answers the scrape; the pipeline and outbox metrics come from the database
  and agree whichever worker answers;
- ``/healthz`` in a worker reports the worker and its database (the channels
  run in the parent), and the operator jobs of ``/v1/ops`` and the console
  (kept in memory) are visible only in the worker that started them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from bridge.api.app import create_app
from bridge.api.ratelimit import BucketTable
from bridge.db import Database
from bridge.settings import Settings

__all__ = ["serve"]

log = logging.getLogger(__name__)

#: how often the parent checks that its workers are alive, seconds
WATCH_SECONDS = 0.5


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ours stop the runtime too (uvicorn re-raises the signal
    after its shutdown, which would kill the process before the sources and processors stop cleanly)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Any, **kw: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", **kw)


def _on_stop(action: Callable[[], None]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: action())


def serve(settings: Settings, db: Database, *, runtime: Any = None, host: str | None = None,
          port: int | None = None) -> None:
    """Serve the API on ``host:port`` (default: ``api.host``, ``api.port``) until SIGTERM or SIGINT."""
    from bridge.runtime import freeze_startup_heap

    host = host or settings.api.host
    port = port or settings.api.port
    if settings.api.workers == 1:
        server = _Server(_config(create_app(settings, db, runtime), host=host, port=port))
        _on_stop(lambda: setattr(server, "should_exit", True))
        freeze_startup_heap()  # the end of this process's start-up (bridge run's runtime included)
        server.run()
        return
    freeze_startup_heap()  # this process keeps the runtime, if any; each worker freezes its own heap
    _supervise(settings, host, port)


def _supervise(settings: Settings, host: str, port: int) -> None:
    sock = _listen(host, port)
    buckets = BucketTable.shared()
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    _on_stop(stop.set)

    def start(n: int) -> Any:
        proc = ctx.Process(target=_worker, args=(settings, sock, buckets), name=f"bridge-api-{n}", daemon=True)
        proc.start()
        return proc

    workers = [start(n) for n in range(settings.api.workers)]
    log.info("API workers started", extra={"workers": len(workers), "host": host, "port": port})
    try:
        while not stop.wait(WATCH_SECONDS):
            for n, proc in enumerate(workers):
                if not proc.is_alive():
                    log.error("API worker exited; starting it again", extra={"worker": n, "exitcode": proc.exitcode})
                    workers[n] = start(n)
    finally:
        for proc in workers:
            proc.terminate()  # SIGTERM: uvicorn's graceful shutdown in the worker
        for proc in workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """The shared listening socket, made with ``IPPROTO_TCP`` spelled out: asyncio sets ``TCP_NODELAY`` only on
    sockets whose ``proto`` says TCP, and a socket passed to a worker keeps the ``proto`` it was made with. With
    ``proto`` 0, Nagle's algorithm held the tail of some responses for a delayed ACK (40 ms per page here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _worker(settings: Settings, sock: socket.socket, buckets: BucketTable) -> None:
    """One API worker process: its own app and engine, the shared socket and rate-limit buckets."""
    from bridge.logging import configure

    configure(settings.log_level, settings.log_format)
    # no round trip to test a pooled connection before each page: page reads retry once on a dropped one
    db = Database(settings.database_url, pre_ping=False)
    server = _Server(_config(create_app(settings, db, rate_buckets=buckets)))
    _on_stop(lambda: setattr(server, "should_exit", True))
    from bridge.runtime import freeze_startup_heap

    freeze_startup_heap()
    try:
        server.run(sockets=[sock])
    finally:
        db.dispose()
