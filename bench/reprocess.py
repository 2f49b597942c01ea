"""Benchmark: bulk reprocess after one crosswalk change, and the failure list with 100,000 failures stored.

1. 100 files x 100 rows land on a CSV channel; every row names an item code
   missing from the ``item`` crosswalk, so 10,000 messages fail as master_data.
   One crosswalk entry is added and :func:`bridge.ops.reprocess_fixed` re-runs
   exactly those failures in bulk: messages/s (target: >= 2,000/s on SQLite).
2. 90,000 more open failures are stored (100,000 in all), then the failure list
   is fetched through the console (``/console/failures``, 50 rows with raw
   excerpts read from the archive) and the API (``/v1/failures``, 50 rows):
   p50 / p99 latency (target: p99 < 200 ms).

Usage: ``.venv/bin/python bench/reprocess.py [--url sqlite:///...] [--requests 200]``.
Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from bridge import ops  # noqa: E402
from bridge.api.app import create_app  # noqa: E402
from bridge.api.keys import create_client  # noqa: E402
from bridge.db import Database, utcnow  # noqa: E402
from bridge.db.tables import failures, records  # noqa: E402
from bridge.pipeline.land import land  # noqa: E402
from bridge.settings import Settings  # noqa: E402
from mappings.crosswalks import upsert_entries  # noqa: E402

HEADER = "timestamp,item,quantity,unit,department,transaction_type,encounter\n"


def file_bytes(n: int, file_no: int) -> bytes:
    lines = [HEADER]
    for i in range(n):
        lines.append(f"2026-11-26 {i // 3600:02d}:{(i // 60) % 60:02d}:{i % 60:02d},MISSING-1,1,EA,ICU,issue,"
                     f"V{file_no:04d}{i:05d}\n")
    return "".join(lines).encode()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="database URL (default: a temp SQLite file)")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--total-failures", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="reprocess threads (processing.workers)")
    ap.add_argument("--dir", type=Path, help="work directory, kept afterwards (default: a new temp dir)")
    args = ap.parse_args()
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="bench-reprocess-"))
    tmp.mkdir(parents=True, exist_ok=True)
    url = args.url or f"sqlite:///{tmp / 'bridge.db'}"
    db = Database(url)
    db.upgrade()
    settings = Settings.model_validate({
        "database_url": url, "data_dir": str(tmp / "var"),
        "channels": {"cabinets": {"source": {"type": "folder", "path": str(tmp / "drop")},
                                  "parser": {"type": "csv"}, "mapping": {"type": "inventory_movement_csv"}}}})
    with db.write() as conn:
        upsert_entries(conn, "department", [{"source_code": "ICU", "target_code": "CC-4100"}])
    ctx = ops.OpsContext.from_settings(settings, db)
    processor = ctx.processor()
    t0 = time.perf_counter()
    ids = []
    for f in range(args.files):
        landed = land(db, ctx.archive, channel="cabinets", src=io.BytesIO(file_bytes(args.rows, f)),
                      name=f"export-{f:03d}.csv", origin="sftp://cabinet-vendor/out")
        processor.process(landed.inbound_id)
        ids.append(landed.inbound_id)
    with db.read() as conn:
        n_fail = conn.execute(select(func.count()).select_from(failures).where(failures.c.status == "open")).scalar()
    print(f"setup: {args.files} files x {args.rows} rows landed and processed, {n_fail} open master_data "
          f"failures ({time.perf_counter() - t0:.1f} s)")

    out = ops.crosswalk_add(db, "item", [{"source_code": "MISSING-1", "target_code": "ERP-0001"}], actor="bench")
    print(f"crosswalk change fixes {out['fixes']} failures")
    t0 = time.perf_counter()
    summary = ops.reprocess_fixed(ctx, "item", ["MISSING-1"], actor="bench", reason="benchmark",
                                  workers=args.workers)
    dt = time.perf_counter() - t0
    assert isinstance(summary, ops.ReprocessSummary)
    with db.read() as conn:
        n_rec = conn.execute(select(func.count()).select_from(records)).scalar()
    print(f"bulk reprocess: {summary.messages} messages in {summary.files} files, {summary.resolved} resolved, "
          f"{summary.failed_again} failed again, {n_rec} records in {dt:.2f} s = {summary.messages / dt:,.0f} "
          f"messages/s ({db.dialect}, {args.workers} workers)")

    # 2. the failure list with 100,000 failures stored
    extra = args.total_failures - args.files * args.rows
    now = utcnow()
    per_file = max(1, extra // len(ids))
    batch = []
    with db.write() as conn:
        for inbound_id in ids:
            for j in range(per_file):
                idx = args.rows + j
                batch.append({"inbound_id": inbound_id, "channel": "cabinets", "message_index": idx,
                              "category": ("master_data", "mapping", "parse")[j % 3],
                              "reason": "no item crosswalk entry for code 'MISSING-2'", "kind": "item",
                              "key": "MISSING-2", "status": "open", "attempts": 1, "created_at": now,
                              "updated_at": now,
                              "position": f'{{"file": "export.csv", "message": {idx}, "line": {2 + j % args.rows}, '
                                          f'"field": "item"}}'})
                if len(batch) >= 5000:
                    conn.execute(insert(failures), batch)
                    batch = []
        if batch:
            conn.execute(insert(failures), batch)
    with db.read() as conn:
        total = conn.execute(select(func.count()).select_from(failures)).scalar()
    key = create_client(db, "bench", ["ops:read", "ops:write"])[1]
    app = create_app(settings, db)
    app.state.ops = ctx
    with TestClient(app) as client:
        client.post("/console/login", data={"key": key, "csrf": "t"}, cookies={"bridge_login_csrf": "t"},
                    follow_redirects=False)
        for name, path, params, headers in (
            ("console /console/failures", "/console/failures", {}, {}),
            ("console /console/failures?category=mapping", "/console/failures", {"category": "mapping"}, {}),
            ("API /v1/failures?limit=50", "/v1/failures", {"limit": 50}, {"X-API-Key": key}),
        ):
            times = []
            for _ in range(5):
                client.get(path, params=params, headers=headers)
            for _ in range(args.requests):
                t = time.perf_counter()
                r = client.get(path, params=params, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.status_code
            print(f"{name}: {total:,} failures stored, {args.requests} requests: p50 {statistics.median(times):.1f} ms, "
                  f"p99 {pct(times, 0.99):.1f} ms")
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
