"""Benchmark: ingest a generated supply-consumption CSV (land + Processor) on SQLite and PostgreSQL.

Prints, per backend, the rows, seconds, rows/s and the peak RSS of the process
that did the work (each backend runs in its own subprocess, so the RSS is
honest: imports, migrations, landing and processing, nothing else). In the
same run it times a bare ``sqlite3`` loop writing one record and one event per
row in 1,000-row transactions (the ceiling, see FIELD-NOTES "Outbox"), right
before and right after the SQLite run, and prints the ratio to their mean. Targets (issue 2): >= 20,000 rows/s and >= 40% of the bare
loop on SQLite; peak RSS < 150 MB whatever the file size.

Usage::

    .venv/bin/python bench/ingest_flat.py [--rows 200000] [--backends sqlite,postgresql]
    .venv/bin/python bench/ingest_flat.py --size-mb 200 --backends sqlite   # RSS on a 200 MB file

The machine is shared (2 cores, several engineers): figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_ITEMS = 500
N_DEPTS = 40
HEADER = "Timestamp,Item,Qty,UOM,Dept,Lot,Serial,Encounter,Type,Cabinet\n"


def generate(path: Path, *, rows: int | None = None, size_mb: float | None = None, seed: int = 7) -> int:
    """Write a synthetic consumption CSV (no real patients); return the data row count."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    types = ("issue", "issue", "issue", "return", "waste")
    limit = int(size_mb * 1024 * 1024) if size_mb else None
    n = 0
    size = len(HEADER)
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        buf: list[str] = []
        while True:
            if rows is not None and n >= rows:
                break
            if limit is not None and size >= limit:
                break
            ts = start + timedelta(seconds=n * 3)
            line = (f"{ts:%Y-%m-%d %H:%M:%S},ITM{rnd.randrange(N_ITEMS):05d},{rnd.randint(1, 12)},EA,"
                    f"D{rnd.randrange(N_DEPTS):03d},L{rnd.randrange(10**6):06d},,ENC{rnd.randrange(10**7):07d},"
                    f"{rnd.choice(types)},CAB{rnd.randrange(20):02d}\n")
            buf.append(line)
            size += len(line)
            n += 1
            if len(buf) >= 10_000:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf))
    return n


def _seed_crosswalks(db: object) -> None:
    from mappings.crosswalks import upsert_entries

    with db.write() as conn:  # type: ignore[attr-defined]
        upsert_entries(conn, "item", [{"source_code": f"ITM{i:05d}", "target_code": f"ERP-{i}"} for i in range(N_ITEMS)])
        upsert_entries(conn, "department", [{"source_code": f"D{i:03d}", "target_code": f"CC{i:03d}"}
                                            for i in range(N_DEPTS)])


def child(backend: str, csv_path: Path, workdir: Path, profile: str | None) -> dict[str, object]:
    """Land and process ``csv_path`` on ``backend``; runs in its own process."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import func, select

    from bridge.db import Database
    from bridge.db.tables import events, records
    from bridge.pipeline.land import Archive, land
    from bridge.pipeline.process import Processor, build_channel
    from bridge.settings import ChannelConfig
    from tests.conftest import drop_pg_schema, make_pg_url

    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    else:
        url, schema = make_pg_url()
    db = Database(url)
    try:
        db.upgrade()
        _seed_crosswalks(db)
        archive = Archive(workdir / f"archive-{backend}")
        channel = build_channel("cabinets", ChannelConfig.model_validate({
            "source": {"type": "folder"}, "parser": {"type": "csv"},
            "mapping": {"type": "inventory_movement_csv", "location": "MAIN"},
            "description": "bench",
        }))
        proc = Processor(db, archive, {"cabinets": channel})
        t0 = time.perf_counter()
        with open(csv_path, "rb") as f:
            landed = land(db, archive, channel="cabinets", src=f, name=csv_path.name)
        t_land = time.perf_counter() - t0
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            result = proc.process(landed.inbound_id)
            prof.disable()
            prof.dump_stats(profile)
        else:
            result = proc.process(landed.inbound_id)
        total = time.perf_counter() - t0
        assert result is not None
        with db.read() as conn:
            n_records = conn.execute(select(func.count()).select_from(records)).scalar_one()
            n_events = conn.execute(select(func.count()).select_from(events)).scalar_one()
        return {
            "backend": backend, "status": result.status, "messages": result.messages, "records": n_records,
            "events": n_events, "failures": result.failures, "seconds": round(total, 2),
            "land_seconds": round(t_land, 2), "rows_per_s": round(result.messages / total),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        db.dispose()
        if schema:
            drop_pg_schema(schema)


def bare_sqlite(csv_path: Path, workdir: Path, when: str = "") -> dict[str, object]:
    """The ceiling: csv.reader + orjson + sqlite3, one record and one event per row, 1,000 rows per txn."""
    import csv

    import orjson

    path = workdir / f"bare-{when}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, type TEXT NOT NULL, natural_key TEXT NOT NULL, "
                 "data TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (type, natural_key))")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL, "
                 "aggregate_id TEXT NOT NULL, record_id INTEGER REFERENCES records(id), payload TEXT NOT NULL, "
                 "created_at TEXT NOT NULL)")
    t0 = time.perf_counter()
    n = 0
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        names = next(reader)
        conn.execute("BEGIN")
        for row in reader:
            now = datetime.now(UTC).isoformat()
            doc = dict(zip(names, row, strict=True))
            data = orjson.dumps(doc).decode()
            cur = conn.execute("INSERT INTO records (type, natural_key, data, created_at) VALUES (?, ?, ?, ?)",
                               ("inventory_movement", f"k{n}", data, now))
            conn.execute("INSERT INTO events (id, event_type, aggregate_id, record_id, payload, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (str(uuid.uuid4()), "inventory.movement.recorded", row[1], cur.lastrowid,
                          orjson.dumps({"type": "inventory.movement.recorded", "record": doc}).decode(), now))
            n += 1
            if n % 1000 == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        conn.execute("COMMIT")
    seconds = time.perf_counter() - t0
    conn.close()
    return {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "when": when}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--size-mb", type=float, default=None, help="generate by size instead of rows")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--profile", default=None, help="write cProfile stats of the processing to PREFIX.<backend>")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.csv), Path(args.workdir), args.profile)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-flat-") as tmp:
        work = Path(tmp)
        csv_path = work / "consumption.csv"
        t0 = time.perf_counter()
        n = generate(csv_path, rows=None if args.size_mb else args.rows, size_mb=args.size_mb)
        print(f"generated {n:,} rows, {csv_path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s"
              " (shared 2-core machine: figures are noisy)")
        results = {}
        bares: list[dict[str, object]] = []
        for backend in [b for b in args.backends.split(",") if b]:
            if backend == "sqlite" and not args.no_bare:
                # bracket the SQLite run with the bare loop: on a shared machine the load moves
                bares.append(bare_sqlite(csv_path, work, "before"))
            cmd = [sys.executable, __file__, "--child", backend, "--csv", str(csv_path), "--workdir", tmp]
            if args.profile:
                cmd += ["--profile", f"{args.profile}.{backend}"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[backend] = res
            print(f"{backend:>10}: {res['messages']:,} rows ({res['records']:,} records, {res['events']:,} events, "
                  f"status {res['status']}) in {res['seconds']}s (landing {res['land_seconds']}s) = "
                  f"{res['rows_per_s']:,} rows/s, peak RSS {res['peak_rss_mb']} MB")
            if backend == "sqlite" and not args.no_bare:
                bares.append(bare_sqlite(csv_path, work, "after"))
        for bare in bares:
            print(f"bare sqlite3 loop ({bare['when']} the SQLite run): {bare['rows']:,} rows in {bare['seconds']}s"
                  f" = {bare['rows_per_s']:,} rows/s")
        if bares and "sqlite" in results:
            mean = sum(int(b["rows_per_s"]) for b in bares) / len(bares)  # type: ignore[call-overload]
            ratio = results["sqlite"]["rows_per_s"] / mean
            print(f"bridge on SQLite / bare loop (mean of both): {ratio:.0%} (target 40%; 20,000 rows/s absolute)")


if __name__ == "__main__":
    main()
