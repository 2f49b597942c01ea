"""Benchmark the outbox relay: events/s, latency and duplicates, to a webhook and to RabbitMQ.

For each scenario (destination x backend x relay processes) a fresh database
gets ``--events`` events over ``--keys`` ordering keys, then relay processes
(``bridge``'s :class:`outbox.relay.Relay` in subprocesses) deliver the backlog to a
local receiver: a bare asyncio HTTP/1.1 responder in a thread (HTTP) or a pika consumer on a
fresh queue (RabbitMQ, 127.0.0.1:5672). Printed per scenario:

- ``throughput``: events/s draining the backlog (first receipt to last);
- ``backlog p50/p99``: created_at to receipt while draining (dominated by queueing);
- ``paced p50/p99``: created_at to receipt for ``--paced-rate`` events/s written
  for ``--paced-seconds`` while the relays are idle-polling: the commit-to-receipt
  latency of a system that keeps up. The writer here is this process, not the
  relays': on PostgreSQL NOTIFY wakes them; on SQLite nothing crosses processes,
  so the figure includes up to ``--poll`` (in ``bridge run`` the writer's commit
  wakes its own relay);
- ``dupes``: receipts beyond the first per event id (must be 0 without faults);
- with ``--webhook-delay-ms`` the receiver answers each POST that much later, as a
  remote ERP does: throughput then rests on the requests in flight (``--workers`` x
  the destination's ``concurrency`` per process), which more relay processes add to,
  as long as each claim takes few enough keys (``--batch``) to leave some for them;
- ``CPU ms per 1,000 events`` over the whole scenario (backlog, paced phase,
  idle waits), a figure that a busy machine inflates far less than events/s:
  ``relay`` (user + system of the relay processes after start-up), ``claim``/``send``/``record``
  (thread CPU of the workers inside ``Relay.claim``, the destinations'
  ``deliver_many`` and ``Relay.record``; the rest of ``relay`` is fan-out,
  LISTEN and lease timers), ``pg`` (the PostgreSQL backends of the
  relay processes, found by ``application_name``) and ``mq`` (every
  ``beam.smp`` on the machine: RabbitMQ, shared with anything else using it);
  then the number of claims the relays made, and how many found nothing.

Usage: ``.venv/bin/python bench/relay.py --events 20000`` (default 100,000).
Figures on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.db import Database  # noqa: E402
from bridge.runtime import freeze_startup_heap  # noqa: E402
from mappings.base import EventDraft  # noqa: E402
from outbox.writer import Origin, write_events  # noqa: E402

PG_URL = os.environ.get("BRIDGE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


# -- receivers ----------------------------------------------------------------

class Receipts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, float] = {}
        self.created: dict[str, float] = {}
        self.total = 0

    def add(self, event_id: str, created_at: str | None) -> None:
        now = time.time()
        with self.lock:
            self.total += 1
            if event_id not in self.times:
                self.times[event_id] = now
                if created_at:
                    self.created[event_id] = datetime.fromisoformat(created_at).timestamp()

    def reset(self) -> None:
        with self.lock:
            self.times.clear()
            self.created.clear()
            self.total = 0


_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def start_http(receipts: Receipts, delay: float = 0.0) -> tuple[str, Any]:
    """The ERP's stand-in: a bare asyncio HTTP/1.1 responder in a thread of this process.

    Per request it counts the ``Idempotency-Key``, reads ``created_at`` from the JSON
    body (for latency and duplicates) and answers 200 on the kept-alive connection.
    uvicorn (h11) cost 130 to 180 us CPU per request on the 2 cores the relay
    shares; this costs 15 to 40 (``bench/http_clients.py`` prints the clients' and
    this receiver's CPU per request). It reads ``Content-Length`` bodies only, which
    is what the destination sends: anything else is answered 411 (400 without an
    ``Idempotency-Key``) and closed. ``delay``: seconds before each answer, a remote
    ERP's response time (the relay's throughput then rests on how many requests it
    keeps in flight, not on CPU).
    Returns the URL and a handle whose ``should_exit = True`` stops the receiver
    (uvicorn.Server's spelling, which ``run`` uses).
    """
    import asyncio
    import re

    field = re.compile(rb"\r\n(content-length|idempotency-key):[ \t]*([^\r]*)", re.IGNORECASE)
    transports: set[asyncio.Transport] = set()

    class Webhook(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transports.add(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            transports.discard(self.transport)

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:  # a whole head: requests may be pipelined
                fields = {m[1].lower(): m[2] for m in field.finditer(self.buf, 0, end)}
                length, key = fields.get(b"content-length", b""), fields.get(b"idempotency-key")
                if key is None or not length.isdigit():
                    status = b"400 Bad Request" if key is None else b"411 Length Required"
                    self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    self.transport.close()
                    return
                stop = end + 4 + int(length)
                if len(self.buf) < stop:
                    return
                doc = orjson.loads(self.buf[end + 4:stop])
                del self.buf[:stop]
                receipts.add(key.decode(), doc.get("created_at"))
                if delay:
                    loop.call_later(delay, self.transport.write, _OK)
                else:
                    self.transport.write(_OK)

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Webhook, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]

    def serve() -> None:
        loop.run_forever()
        server.close()
        for transport in list(transports):
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=serve, name="webhook", daemon=True)
    thread.start()

    class Handle:
        @property
        def should_exit(self) -> bool:
            return not thread.is_alive()

        @should_exit.setter
        def should_exit(self, value: bool) -> None:
            if value and thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)

    return f"http://127.0.0.1:{port}/events", Handle()


def start_amqp(receipts: Receipts, exchange: str, queue: str) -> Any:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, exchange, routing_key="#")
    stop = threading.Event()

    def on_message(_channel: Any, _method: Any, props: Any, body: bytes) -> None:
        doc = orjson.loads(body)
        receipts.add(props.message_id, doc.get("created_at"))

    # auto-ack: the receiver is not under test, and a basic.ack per message doubled the broker's work
    ch.basic_consume(queue, on_message, auto_ack=True)

    def loop() -> None:
        while not stop.is_set():
            conn.process_data_events(time_limit=0.2)
        ch.queue_delete(queue)
        ch.exchange_delete(exchange)
        conn.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return stop, t


# -- database -----------------------------------------------------------------

def fresh_db(backend: str, tmp: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"
        Database(url).upgrade()
        return url, None
    from sqlalchemy import create_engine, text

    schema = "bench_" + uuid.uuid4().hex[:10]
    eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    d = Database(url)
    d.upgrade()
    d.dispose()

    def drop() -> None:
        with eng.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        eng.dispose()

    return url, drop


def write(db: Database, n: int, keys: int, start: int = 0, chunk: int = 2000) -> None:
    for i in range(start, start + n, chunk):
        drafts = [(EventDraft("bench.item.recorded", "item", f"K{j % keys}", {"n": j}), Origin())
                  for j in range(i, min(i + chunk, start + n))]
        with db.write() as conn:
            write_events(db, conn, drafts)


# -- relay processes ----------------------------------------------------------

_PHASES = ("claim", "send", "record")


def child(url: str, spec: str) -> None:
    from bridge.settings import DestinationConfig, RelayConfig
    from outbox import relay as relay_module
    from outbox.relay import Relay

    s = orjson.loads(spec)
    relay = Relay(Database(url), {"bench": DestinationConfig.model_validate(s["destination"])},
                  RelayConfig(**s["relay"]))
    spent = dict.fromkeys((*_PHASES, "claims", "empty"), 0.0)
    lock = threading.Lock()

    def timed(phase: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.thread_time()
            out = None
            try:
                out = fn(*a, **kw)
                return out
            finally:
                with lock:
                    spent[phase] += time.thread_time() - t
                    if phase == "claim":
                        spent["claims"] += 1
                        spent["empty"] += not out
        return wrapper

    # thread CPU of each phase of the worker loop (instrumented here, not in the relay)
    relay.claim = timed("claim", relay.claim)  # type: ignore[method-assign]
    relay.record = timed("record", relay.record)  # type: ignore[method-assign]
    relay_module.attempt_many = timed("send", relay_module.attempt_many)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    spent["startup"] = time.process_time()  # imports and set-up, left out of the relay figure
    relay.start()
    freeze_startup_heap()  # as bridge relay does
    done.wait()
    relay.stop()
    Path(s["report"]).write_bytes(orjson.dumps(spent))


def _ticks(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _beam_cpu() -> float:
    """CPU seconds of every beam.smp (RabbitMQ) process on the machine."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "beam.smp":
                    total += _ticks(int(proc.name))
            except OSError:
                continue
    return total


class Backends:
    """CPU of the PostgreSQL backends serving one ``application_name``, sampled while they live."""

    def __init__(self, db: Database | None, app: str) -> None:
        self.db, self.app = db, app
        self.seen: dict[int, float] = {}

    def sample(self) -> None:
        if self.db is None:
            return
        from sqlalchemy import text

        with self.db.read() as conn:
            pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                                {"a": self.app}).scalars().all()
        for pid in pids:
            self.seen[pid] = max(self.seen.get(pid, 0.0), _ticks(pid))

    def total(self) -> float:
        return sum(self.seen.values())


def run(args: argparse.Namespace, dest: str, backend: str, procs: int, tmp: Path) -> dict[str, Any]:
    receipts = Receipts()
    url, drop = fresh_db(backend, tmp)
    db = Database(url)
    stopper: Any = None
    if dest == "http":
        hook, server = start_http(receipts, args.webhook_delay_ms / 1000)
        destination = {"type": "http", "url": hook, "timeout_seconds": 10}
    else:
        tag = uuid.uuid4().hex[:8]
        exchange, queue = f"bridge-bench-{tag}", f"bridge-bench-{tag}"
        stopper = start_amqp(receipts, exchange, queue)
        destination = {"type": "amqp", "url": AMQP_URL, "exchange": exchange}
    write(db, args.events, args.keys)
    reports = [tmp / f"phases-{uuid.uuid4().hex[:8]}.json" for _ in range(procs)]
    app = f"relaybench{uuid.uuid4().hex[:8]}"
    child_url = url if drop is None else f"{url}&application_name={app}"
    backends = Backends(db if drop is not None else None, app)
    cpu0, mq0 = _children_cpu(), _beam_cpu()
    children = [subprocess.Popen([sys.executable, __file__, "--child", child_url, orjson.dumps({
        "destination": destination, "report": str(report), "relay": {
            "workers": args.workers, "batch_size": args.batch, "lease_seconds": args.lease,
            "poll_seconds": args.poll}}).decode()], cwd=ROOT) for report in reports]
    try:
        t0 = time.time()
        deadline = t0 + args.timeout
        while len(receipts.times) < args.events and time.time() < deadline:
            time.sleep(0.1)
            backends.sample()
        got = len(receipts.times)
        times = sorted(receipts.times.values())
        span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
        lat = sorted(receipts.times[k] - receipts.created[k] for k in receipts.created)
        dupes = receipts.total - got
        # paced phase: a trickle the relays keep up with
        receipts.reset()
        paced_n = int(args.paced_rate * args.paced_seconds)
        step = max(1, args.paced_rate // 10)
        for i in range(0, paced_n, step):
            write(db, min(step, paced_n - i), args.keys, start=args.events + i, chunk=step)
            time.sleep(0.1)
        deadline = time.time() + 30
        while len(receipts.times) < paced_n and time.time() < deadline:
            time.sleep(0.05)
        backends.sample()
        plat = sorted(receipts.times[k] - receipts.created[k] for k in receipts.created)
        dupes += receipts.total - len(receipts.times)
        from sqlalchemy import func, select

        from bridge.db.tables import delivery_attempts
        with db.read() as conn:
            failed = conn.execute(select(delivery_attempts.c.error, func.count()).where(
                delivery_attempts.c.outcome != "delivered").group_by(delivery_attempts.c.error)).all()
    finally:
        for c in children:
            c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(20)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        relay_cpu = _children_cpu() - cpu0
        mq_cpu = _beam_cpu() - mq0 if dest == "amqp" else 0.0
        if dest == "http":
            server.should_exit = True
        else:
            stopper[0].set()
            stopper[1].join(10)
        db.dispose()
        if drop and not args.keep:
            drop()
        elif args.keep:
            print("kept database:", url, flush=True)

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")

    per_k = 1e6 / max(1, got + paced_n)  # CPU seconds -> ms per 1,000 events
    phases = dict.fromkeys((*_PHASES, "startup", "claims", "empty"), 0.0)
    for report in reports:
        if report.exists():
            for k, v in orjson.loads(report.read_bytes()).items():
                phases[k] += v
    return {"dest": dest, "backend": backend, "procs": procs, "received": got, "events": args.events,
            "eps": got / span if span == span and span > 0 else float("nan"),
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "paced_p50": pct(plat, 0.5), "paced_p99": pct(plat, 0.99),
            "dupes": dupes, "failed": {(e or "")[:70]: n for e, n in failed},
            "relay_ms": (relay_cpu - phases["startup"]) * per_k, "claims": int(phases["claims"]),
            "empty": int(phases["empty"]), **{f"{k}_ms": v * per_k for k, v in phases.items()},
            "pg_ms": backends.total() * per_k if drop is not None else float("nan"),
            "mq_ms": mq_cpu * per_k if dest == "amqp" else float("nan")}


def _children_cpu() -> float:
    """CPU seconds of the waited-for child processes (the relays) so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--keys", type=int, default=1000, help="distinct ordering keys")
    p.add_argument("--workers", type=int, default=4, help="delivery threads per relay process")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--poll", type=float, default=0.5,
                   help="relay.poll_seconds: only the fallback, commits and NOTIFY wake the relays")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema for inspection")
    p.add_argument("--lease", type=float, default=120.0, help="relay.lease_seconds")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--paced-rate", type=int, default=200)
    p.add_argument("--paced-seconds", type=float, default=3)
    p.add_argument("--webhook-delay-ms", type=float, default=0.0,
                   help="the receiver answers each POST after this long (a remote ERP's response time)")
    p.add_argument("--only", help="comma list of scenarios like http-postgresql-1,amqp-sqlite-1")
    args = p.parse_args()
    scenarios = [(d, "postgresql", 1) for d in ("http", "amqp")] + [(d, "postgresql", 3) for d in ("http", "amqp")] \
        + [(d, "sqlite", 1) for d in ("http", "amqp")]
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = [s for s in scenarios if f"{s[0]}-{s[1]}-{s[2]}" in wanted]
    import tempfile

    print(f"relay bench: {args.events} events over {args.keys} keys, {args.workers} workers x batch {args.batch} "
          f"per process, paced {args.paced_rate}/s, webhook answers after {args.webhook_delay_ms:g} ms; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} CPUs (shared, noisy)")
    print(f"{'scenario':<22}{'received':>10}{'events/s':>10}{'backlog p50':>13}{'p99 ms':>9}"
          f"{'paced p50':>11}{'p99 ms':>9}{'dupes':>7}  CPU ms per 1,000 events: "
          f"{'relay':>6}{'claim':>6}{'send':>6}{'record':>7}{'pg':>6}{'mq':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for dest, backend, procs in scenarios:
            r = run(args, dest, backend, procs, Path(tmp))
            print(f"{dest + '/' + backend + ' x' + str(procs):<22}{r['received']:>10}{r['eps']:>10.0f}"
                  f"{r['p50']:>13.0f}{r['p99']:>9.0f}{r['paced_p50']:>11.0f}{r['paced_p99']:>9.0f}{r['dupes']:>7}"
                  f"{'':26}{r['relay_ms']:>6.0f}{r['claim_ms']:>6.0f}{r['send_ms']:>6.0f}{r['record_ms']:>7.0f}"
                  f"{r['pg_ms']:>6.0f}{r['mq_ms']:>6.0f}",
                  flush=True)
            print(f"{'':<22}claims: {r['claims']} ({r['empty']} empty)", flush=True)
            for error, n in r["failed"].items():
                print(f"{'':<22}failed attempts: {n} x {error}", flush=True)


if __name__ == "__main__":
    main()
