"""Benchmark: read 100-record pages of records and the event feed through the API, on SQLite and PostgreSQL.

Per backend: N synthetic inventory-movement records and their N events are
bulk-loaded (``sqlite3`` executemany / PostgreSQL ``COPY``, after the real
migrations), and the API is served on 127.0.0.1 by :func:`bridge.api.server.serve`
in its own process with ``--workers`` API worker processes (``api.workers``).
A separate load process then walks pages for ``--seconds``, twice:

- **closed loop** (saturation): ``--connections`` connections, each sending its
  next request as soon as the last is answered: the requests/s the server
  sustains, and the latency at that load;
- **paced** (open loop) at ``--rate`` requests/s: the latency AT that rate,
  which is what issue 8's target is about. A send slot missed by more than
  5 ms counts as "late" (the server could not keep the rate).

Half the load follows ``/v1/records/inventory-movements`` cursors, half
``/v1/events``, starting at a random depth and wrapping at the end. The load
generator is wrk (Debian ``wrk``, C, with ``bench/api_pages.lua``), so it costs
little of the CPU the server needs; without wrk a Python (httpx) generator runs
instead and says so. For each run it prints requests/s, records/s, p50/p99,
and the server's CPU time per page (user + system of the server processes,
from ``/proc``, divided by the requests served): the figure that does not
depend on how busy the machine is, and on PostgreSQL the CPU of the database
backends serving the API (found by ``application_name``), which share the
machine's cores with the server. Then page latency at a shallow cursor (the
first pages) and a deep one (the last pages), sequentially, to show keyset
paging costs the same at any depth.

Usage::

    .venv/bin/python bench/api.py [--records 1000000] [--seconds 30] [--rate 500] [--workers 2]
                                  [--connections 16] [--backends sqlite,postgresql] [--generator wrk|python]

Issue 8's target: p99 < 50 ms at 500 requests/s of 100-record pages on
PostgreSQL, page latency independent of depth. The machine has 2 cores shared
with several engineers, and the load process shares them with the server and
the database: figures are noisy and a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_URL = os.environ.get("BRIDGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PAGE = 100
CHUNK = 50_000


# -- data ------------------------------------------------------------------------------------------

def _rows(n: int, start: datetime):
    """(natural_key, record json, event id, payload json, timestamp) per synthetic movement; no real patients."""
    rnd = random.Random(11)
    for i in range(n):
        at = start + timedelta(seconds=i)
        key = f"bench:{i:09d}"
        item = f"ERP-{rnd.randrange(500):05d}"
        cc = f"CC-{4000 + rnd.randrange(40)}"
        qty = 1 + rnd.randrange(5)
        record = json.dumps({
            "movement_id": key, "movement_type": "issue", "occurred_at": at.isoformat(), "item": item,
            "source_item": item[4:], "quantity": str(qty), "quantity_delta": str(-qty), "unit": "EA",
            "department": "D" + cc[3:], "cost_center": cc, "location": None, "lot": None, "serial": None,
            "encounter": f"V{i:07d}", "source_channel": "bench"}, separators=(",", ":"))
        event_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        payload = json.dumps({
            "id": event_id, "type": "inventory.movement.recorded", "created_at": at.isoformat(),
            "aggregate_type": "inventory_movement", "aggregate_id": f"{item}@{cc}", "correlation_id": None,
            "source": {"channel": "bench", "inbound_id": None, "message": None},
            "record_type": "inventory_movement", "natural_key": key, "record_id": i + 1, "version": 1,
            "record": json.loads(record)}, separators=(",", ":"))
        yield key, record, event_id, payload, at, f"{item}@{cc}"


def load_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch_r, batch_e = [], []
    for i, (key, record, event_id, payload, at, agg) in enumerate(_rows(n, start)):
        ts = at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        batch_r.append((i + 1, "inventory_movement", key, record, "0" * 40, 1, ts, ts))
        batch_e.append((event_id, "inventory.movement.recorded", "inventory_movement", agg, i + 1, payload, ts))
        if len(batch_r) >= CHUNK:
            _flush_sqlite(conn, batch_r, batch_e)
    _flush_sqlite(conn, batch_r, batch_e)
    conn.execute("ANALYZE")
    conn.close()


def _flush_sqlite(conn: sqlite3.Connection, batch_r: list, batch_e: list) -> None:
    with conn:
        conn.executemany("INSERT INTO records (id, type, natural_key, data, content_hash, version, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch_r)
        conn.executemany("INSERT INTO events (id, event_type, aggregate_type, aggregate_id, record_id, payload, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", batch_e)
    batch_r.clear()
    batch_e.clear()


def load_postgres(url: str, schema: str, n: int) -> None:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(dsn) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        with conn.cursor() as cur:
            # two passes over the same seeded rows: events reference records
            with cur.copy("COPY records (id, type, natural_key, data, content_hash, version, created_at, "
                          "updated_at) FROM STDIN") as copy:
                for i, (key, record, _eid, _payload, at, _agg) in enumerate(_rows(n, start)):
                    copy.write_row((i + 1, "inventory_movement", key, record, "0" * 40, 1, at, at))
            with cur.copy("COPY events (id, event_type, aggregate_type, aggregate_id, record_id, payload, "
                          "created_at) FROM STDIN") as copy:
                for i, (_key, _record, event_id, payload, at, agg) in enumerate(_rows(n, start)):
                    copy.write_row((event_id, "inventory.movement.recorded", "inventory_movement", agg, i + 1,
                                    payload, at))
            cur.execute("SELECT setval(pg_get_serial_sequence('records', 'id'), %s)", (n,))
        conn.commit()
        conn.autocommit = True
        # VACUUM as well as ANALYZE: a table of a million rows in service has been vacuumed; left to
        # autovacuum, the vacuum of the freshly copied rows (and the hint bits its first readers set)
        # ran during the measured minute and put its pauses into the API's p99 (seen: 462 ms)
        conn.execute("VACUUM (ANALYZE) records")
        conn.execute("VACUUM (ANALYZE) events")


# -- server ----------------------------------------------------------------------------------------

SERVER = r"""
import sys
from bridge.api.server import serve
from bridge.db import Database
from bridge.settings import Settings
url, port, data_dir, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# WARNING: no access-log line per request (bridge run logs them at INFO)
settings = Settings.model_validate({"data_dir": data_dir, "database_url": url, "log_level": "WARNING",
                                   "api": {"rate_limit_per_minute": None, "workers": workers}})
serve(settings, Database(url), host="127.0.0.1", port=port)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str, data_dir: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port), data_dir, str(workers)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(300):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the API server exited during start-up")
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the API server did not come up")


#: the ``application_name`` of the server's PostgreSQL sessions, to find their backends' CPU
APP_NAME = "bridge-bench-api"


def database_cpu(backend: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the API (empty on SQLite, which runs in the server).

    The backends are processes of the local server, found by ``application_name`` in ``pg_stat_activity``;
    one that exits during a run (a pool's overflow connection) is not counted.
    """
    if backend != "postgresql":
        return {}
    import psycopg

    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                           (APP_NAME,))]
    return {pid: cpu_seconds(pid) for pid in pids}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants so far (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


# -- load generators (each runs in its own process) ------------------------------------------------

LUA = Path(__file__).with_name("api_pages.lua")


def start_cursor(n: int, seed: int) -> tuple[str, int]:
    """A records cursor and an event seq at a random depth."""
    from bridge.api.deps import encode_cursor

    rnd = random.Random(seed)
    return encode_cursor("rec", rnd.randrange(1, n)), rnd.randrange(n)


def run_wrk(base: str, key: str, seconds: float, connections: int, rate: int, n: int) -> dict[str, float]:
    cursor, after = start_cursor(n, rate)
    threads = 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{max(connections, threads)}", f"-d{seconds:.0f}s",
                          "--timeout", "10s", "-s", str(LUA), base, "--", key, str(rate), str(threads), cursor,
                          str(after)], capture_output=True, text=True, check=True)
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def python_load(base: str, key: str, seconds: float, connections: int, rate: int, n: int) -> None:
    """The fallback generator: httpx threads, closed loop (rate 0) or paced; prints one JSON line."""
    import httpx

    lat: list[list[float]] = [[] for _ in range(connections)]
    got = [0] * connections
    errors = [0] * connections
    late = [0] * connections
    interval = connections / rate if rate else 0.0
    begin = time.perf_counter()
    stop = begin + seconds
    cursor, after = start_cursor(n, rate)

    def worker(w: int) -> None:
        feed = w % 2 == 1
        pos: str | int = after if feed else cursor
        slot = begin + w * interval / connections
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
            while time.perf_counter() < stop:
                if interval:
                    wait = slot - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -0.005:
                        late[w] += 1
                    slot += interval
                url = f"/v1/events?after={pos}&limit={PAGE}" if feed else \
                    f"/v1/records/inventory-movements?limit={PAGE}&after={pos}"
                t0 = time.perf_counter()
                resp = client.get(url)
                lat[w].append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors[w] += 1
                    continue
                page = resp.json()
                got[w] += len(page["items"])
                if feed:
                    pos = page["next_cursor"] if page["items"] else 0
                else:
                    pos = page["next_cursor"] or ""

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    every = sorted(x for per in lat for x in per)
    print(json.dumps({"requests": len(every), "records": sum(got), "errors": sum(errors), "socket_errors": 0,
                      "late": sum(late), "seconds": elapsed,
                      "p50_ms": 1000 * every[len(every) // 2] if every else None,
                      "p99_ms": 1000 * every[int(len(every) * 0.99)] if every else None}))


def run_python(base: str, key: str, seconds: float, connections: int, rate: int, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--load", base, key, str(seconds), str(connections), str(rate),
                          str(n)], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def depth_latency(base: str, key: str, n: int, pages: int = 40) -> dict[str, float]:
    import httpx

    from bridge.api.deps import encode_cursor

    out: dict[str, float] = {}
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        for name, start in (("shallow", 0), ("deep", max(0, n - (pages + 1) * PAGE))):
            for kind in ("records", "events"):
                times = []
                for p in range(pages):
                    pos = start + p * PAGE
                    if kind == "events":
                        url = f"/v1/events?after={pos}&limit={PAGE}"
                    else:
                        url = f"/v1/records/inventory-movements?limit={PAGE}" + (
                            f"&after={encode_cursor('rec', pos)}" if pos else "")
                    t0 = time.perf_counter()
                    resp = client.get(url)
                    times.append(time.perf_counter() - t0)
                    assert resp.status_code == 200 and len(resp.json()["items"]) == PAGE, resp.text[:200]
                out[f"{kind}_{name}_p50_ms"] = 1000 * statistics.median(times)
    return out


# -- driver ----------------------------------------------------------------------------------------

def prepare(backend: str, n: int, tmp: Path) -> tuple[str, str | None, float]:
    """A migrated database of ``backend`` holding ``n`` records and events: (url, PostgreSQL schema, load s)."""
    from sqlalchemy import create_engine, text

    from bridge.db import Database

    schema = None
    if backend == "sqlite":
        path = tmp / "bench.db"
        url = f"sqlite:///{path}"
    else:
        schema = f"bench_api_{uuid.uuid4().hex[:8]}"
        eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        eng.dispose()
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}&application_name={APP_NAME}"
    db = Database(url)
    db.upgrade()
    db.dispose()
    t0 = time.perf_counter()
    if schema is None:
        load_sqlite(tmp / "bench.db", n)
    else:
        load_postgres(url, schema, n)
    return url, schema, time.perf_counter() - t0


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


def run_backend(backend: str, args: argparse.Namespace, generate, tmp: Path) -> dict[str, object]:
    from bridge.api.keys import create_client
    from bridge.db import Database

    url, schema, loaded = prepare(backend, args.records, tmp)
    try:
        db = Database(url)
        _, key = create_client(db, "bench", ["records:read", "events:read"])
        db.dispose()
        proc, base = serve(url, str(tmp / backend), args.workers)
        try:
            out: dict[str, object] = {"load_seconds": round(loaded, 1), **depth_latency(base, key, args.records)}
            for name, rate in (("closed", 0), ("paced", args.rate)):
                cpu0, db0 = cpu_seconds(proc.pid), database_cpu(backend)
                r = generate(base, key, args.seconds, args.connections, rate, args.records)
                pages = max(1, r["requests"])
                r["cpu_ms_per_page"] = 1000 * (cpu_seconds(proc.pid) - cpu0) / pages
                db1 = database_cpu(backend)  # a backend started during the run counts from zero
                r["db_cpu_ms_per_page"] = 1000 * sum(t - db0.get(pid, 0.0) for pid, t in db1.items()) / pages
                r["load"] = os.getloadavg()[0]
                out[name] = r
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        if schema is not None:
            drop_schema(schema)
    return out


def report(name: str, r: dict[str, float]) -> str:
    return (f"  {name}: {r['requests'] / r['seconds']:,.0f} requests/s  {r['records'] / r['seconds']:,.0f} records/s  "
            f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  errors {r['errors'] + r['socket_errors']}  "
            f"late sends {r['late']}  server CPU {r['cpu_ms_per_page']:.2f} ms/page"
            + (f" (+ PostgreSQL {r['db_cpu_ms_per_page']:.2f})" if r["db_cpu_ms_per_page"] else "")
            + f"  load average {r['load']:.1f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        base, key, seconds, connections, rate, n = sys.argv[2:8]
        python_load(base, key, float(seconds), int(connections), int(rate), int(n))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=500, help="requests/s of the paced run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="API worker processes (api.workers)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--generator", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = ap.parse_args()
    generate = run_wrk if args.generator == "wrk" else run_python
    print(f"{args.records:,} records + {args.records:,} events stored; pages of {PAGE}; {args.workers} API workers; "
          f"load generator: {'wrk (bench/api_pages.lua)' if args.generator == 'wrk' else 'python (httpx threads)'}, "
          f"{args.connections} connections, {args.seconds:.0f} s closed loop then {args.seconds:.0f} s paced at "
          f"{args.rate} requests/s. Load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(shared machine: noisy figures).")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
            r = run_backend(backend, args, generate, Path(tmp))
        print(f"\n{backend}: loaded in {r['load_seconds']} s")
        print(report("closed loop", r["closed"]))  # type: ignore[arg-type]
        print(report(f"paced at {args.rate}/s", r["paced"]))  # type: ignore[arg-type]
        print(f"  page p50, shallow vs deep: records {r['records_shallow_p50_ms']:.1f} / "
              f"{r['records_deep_p50_ms']:.1f} ms, events {r['events_shallow_p50_ms']:.1f} / "
              f"{r['events_deep_p50_ms']:.1f} ms")
        print(f"  load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
