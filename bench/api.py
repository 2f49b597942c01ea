"""Benchmark: read 100-record pages of records and the event feed through the API, on SQLite and PostgreSQL.

Per backend: N synthetic inventory-movement records and their N events are
bulk-loaded (``sqlite3`` executemany / PostgreSQL ``COPY``, after the real
migrations), the API is served by uvicorn in its own process on 127.0.0.1
(one worker, as ``bridge run`` does), and a separate load process (httpx,
``--concurrency`` threads with one keep-alive connection each) walks pages for
``--seconds``: half the threads follow ``/v1/records/inventory-movements``
cursors, half follow ``/v1/events``, each starting at a random depth and
wrapping at the end. It prints requests/s, records/s and p50/p99 latency per
backend, then page latency at a shallow cursor (the first pages) and a deep
one (the last pages), sequentially, to show keyset paging costs the same at
any depth.

Usage::

    .venv/bin/python bench/api.py [--records 1000000] [--seconds 30] [--concurrency 8]
                                  [--backends sqlite,postgresql]

Issue 8's target: p99 < 50 ms at 500 requests/s of 100-record pages on
PostgreSQL, page latency independent of depth. The machine has 2 cores shared
with several engineers, and the load process shares them with the server:
figures are noisy and a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
        conn.execute("ANALYZE records")
        conn.execute("ANALYZE events")


# -- server ----------------------------------------------------------------------------------------

SERVER = r"""
import sys, uvicorn
from bridge.api.app import create_app
from bridge.db import Database
from bridge.settings import Settings
url, port, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
settings = Settings.model_validate({"data_dir": data_dir, "database_url": url, "api": {"rate_limit_per_minute": None}})
db = Database(url)
uvicorn.run(create_app(settings, db), host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port), data_dir], cwd=ROOT,
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


# -- load (runs in its own process: python bench/api.py --load ...) ------------------------------

def load_main(base: str, key: str, seconds: float, concurrency: int, n: int) -> None:
    import httpx

    from bridge.api.deps import encode_cursor

    lat: list[list[float]] = [[] for _ in range(concurrency)]
    got = [0] * concurrency
    errors = [0] * concurrency
    stop = time.perf_counter() + seconds

    def worker(w: int) -> None:
        rnd = random.Random(w)
        feed = w % 2 == 1
        pos = rnd.randrange(n)
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
            while time.perf_counter() < stop:
                if feed:
                    url = f"/v1/events?after={pos}&limit={PAGE}"
                else:
                    after = encode_cursor("rec", pos) if pos else ""
                    url = f"/v1/records/inventory-movements?limit={PAGE}&after={after}"
                t0 = time.perf_counter()
                resp = client.get(url)
                lat[w].append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors[w] += 1
                    continue
                items = resp.json()["items"]
                got[w] += len(items)
                pos = pos + PAGE if len(items) == PAGE else 0

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    every = sorted(x for per in lat for x in per)
    print(json.dumps({"requests": len(every), "records": sum(got), "errors": sum(errors), "seconds": elapsed,
                      "p50_ms": 1000 * every[len(every) // 2] if every else None,
                      "p99_ms": 1000 * every[int(len(every) * 0.99)] if every else None}))


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

def run_backend(backend: str, n: int, seconds: float, concurrency: int, tmp: Path) -> dict[str, object]:
    from sqlalchemy import create_engine, text

    from bridge.api.keys import create_client
    from bridge.db import Database

    schema = None
    if backend == "sqlite":
        path = tmp / "bench.db"
        url = f"sqlite:///{path}"
        db = Database(url)
        db.upgrade()
        db.dispose()
        t0 = time.perf_counter()
        load_sqlite(path, n)
    else:
        schema = f"bench_api_{uuid.uuid4().hex[:8]}"
        eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        eng.dispose()
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
        db = Database(url)
        db.upgrade()
        db.dispose()
        t0 = time.perf_counter()
        load_postgres(url, schema, n)
    loaded = time.perf_counter() - t0
    db = Database(url)
    _, key = create_client(db, "bench", ["records:read", "events:read"])
    db.dispose()
    proc, base = serve(url, str(tmp / backend))
    try:
        depth = depth_latency(base, key, n)
        out = subprocess.run([sys.executable, __file__, "--load", base, key, str(seconds), str(concurrency), str(n)],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        load = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if schema is not None:
            eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with eng.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            eng.dispose()
    return {"backend": backend, "records_stored": n, "load_seconds": round(loaded, 1), **load, **depth}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        base, key, seconds, concurrency, n = sys.argv[2:7]
        load_main(base, key, float(seconds), int(concurrency), int(n))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    print(f"{args.records:,} records + {args.records:,} events stored; {args.concurrency} load threads for "
          f"{args.seconds:.0f} s; pages of {PAGE}. Shared 2-core machine: noisy figures.")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
            r = run_backend(backend, args.records, args.seconds, args.concurrency, Path(tmp))
        rps = r["requests"] / r["seconds"]
        print(f"\n{backend}: loaded in {r['load_seconds']} s")
        print(f"  {rps:,.0f} requests/s  {r['records'] / r['seconds']:,.0f} records/s  "
              f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  errors {r['errors']}")
        print(f"  page p50, shallow vs deep: records {r['records_shallow_p50_ms']:.1f} / "
              f"{r['records_deep_p50_ms']:.1f} ms, events {r['events_shallow_p50_ms']:.1f} / "
              f"{r['events_deep_p50_ms']:.1f} ms")


if __name__ == "__main__":
    main()
