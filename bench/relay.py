"""Benchmark the outbox relay: events/s, latency and duplicates, to a webhook and to RabbitMQ.

For each scenario (destination x backend x relay processes) a fresh database
gets ``--events`` events over ``--keys`` ordering keys, then relay processes
(``bridge``'s :class:`outbox.relay.Relay` in subprocesses) deliver the backlog to a
local receiver: a uvicorn ASGI app in a thread (HTTP) or a pika consumer on a
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
- ``cpu us/ev``: CPU time (user + system) of the relay processes per event
  delivered, over the whole scenario (backlog, paced phase, idle waits): a
  figure that a busy machine inflates far less than events/s.

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


def start_http(receipts: Receipts) -> tuple[str, Any]:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = dict(scope["headers"])
        doc = orjson.loads(body)
        receipts.add(headers[b"idempotency-key"].decode(), doc.get("created_at"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}/events", server


def start_amqp(receipts: Receipts, exchange: str, queue: str) -> Any:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, exchange, routing_key="#")
    ch.basic_qos(prefetch_count=2000)
    stop = threading.Event()

    def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
        doc = orjson.loads(body)
        receipts.add(props.message_id, doc.get("created_at"))
        channel.basic_ack(method.delivery_tag, multiple=False)

    ch.basic_consume(queue, on_message)

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

def child(url: str, spec: str) -> None:
    from bridge.settings import DestinationConfig, RelayConfig
    from outbox.relay import Relay

    s = orjson.loads(spec)
    relay = Relay(Database(url), {"bench": DestinationConfig.model_validate(s["destination"])},
                  RelayConfig(**s["relay"]))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    relay.start()
    done.wait()
    relay.stop()


def run(args: argparse.Namespace, dest: str, backend: str, procs: int, tmp: Path) -> dict[str, Any]:
    receipts = Receipts()
    url, drop = fresh_db(backend, tmp)
    db = Database(url)
    stopper: Any = None
    if dest == "http":
        hook, server = start_http(receipts)
        destination = {"type": "http", "url": hook, "timeout_seconds": 10}
    else:
        tag = uuid.uuid4().hex[:8]
        exchange, queue = f"bridge-bench-{tag}", f"bridge-bench-{tag}"
        stopper = start_amqp(receipts, exchange, queue)
        destination = {"type": "amqp", "url": AMQP_URL, "exchange": exchange}
    write(db, args.events, args.keys)
    spec = orjson.dumps({"destination": destination, "relay": {
        "workers": args.workers, "batch_size": args.batch, "lease_seconds": args.lease, "poll_seconds": args.poll}}).decode()
    cpu0 = _children_cpu()
    children = [subprocess.Popen([sys.executable, __file__, "--child", url, spec], cwd=ROOT) for _ in range(procs)]
    try:
        t0 = time.time()
        deadline = t0 + args.timeout
        while len(receipts.times) < args.events and time.time() < deadline:
            time.sleep(0.1)
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

    return {"dest": dest, "backend": backend, "procs": procs, "received": got, "events": args.events,
            "eps": got / span if span == span and span > 0 else float("nan"),
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "paced_p50": pct(plat, 0.5), "paced_p99": pct(plat, 0.99),
            "dupes": dupes, "failed": {(e or "")[:70]: n for e, n in failed},
            "cpu_us": relay_cpu / max(1, got + paced_n) * 1e6}


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
    p.add_argument("--only", help="comma list of scenarios like http-postgresql-1,amqp-sqlite-1")
    args = p.parse_args()
    scenarios = [(d, "postgresql", 1) for d in ("http", "amqp")] + [(d, "postgresql", 3) for d in ("http", "amqp")] \
        + [(d, "sqlite", 1) for d in ("http", "amqp")]
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = [s for s in scenarios if f"{s[0]}-{s[1]}-{s[2]}" in wanted]
    import tempfile

    print(f"relay bench: {args.events} events over {args.keys} keys, {args.workers} workers x batch {args.batch} "
          f"per process, paced {args.paced_rate}/s; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} CPUs (shared, noisy)")
    print(f"{'scenario':<22}{'received':>10}{'events/s':>10}{'backlog p50':>13}{'p99 ms':>9}"
          f"{'paced p50':>11}{'p99 ms':>9}{'dupes':>7}{'cpu us/ev':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for dest, backend, procs in scenarios:
            r = run(args, dest, backend, procs, Path(tmp))
            print(f"{dest + '/' + backend + ' x' + str(procs):<22}{r['received']:>10}{r['eps']:>10.0f}"
                  f"{r['p50']:>13.0f}{r['p99']:>9.0f}{r['paced_p50']:>11.0f}{r['paced_p99']:>9.0f}{r['dupes']:>7}"
                  f"{r['cpu_us']:>11.0f}",
                  flush=True)
            for error, n in r["failed"].items():
                print(f"{'':<22}failed attempts: {n} x {error}", flush=True)


if __name__ == "__main__":
    main()
