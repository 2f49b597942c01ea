"""Benchmark: what a file (or an MLLP group) pays for its crosswalk lookups, by crosswalk size.

Each file is mapped with a fresh :class:`mappings.crosswalks.CrosswalkSnapshot`.
Printed per size of the ``item`` crosswalk, in ms per file (one snapshot, 3
lookups): ``kept``, the usual case, where the process already holds the entries
and reads only the crosswalks' version; ``after a change``, the first file after
an entry changed (the whole kind is read again, which before migration 0006 every
file paid).

Usage: ``.venv/bin/python bench/crosswalks.py [--sizes 1000,50000] [--files 200]
[--url sqlite:///... | postgresql+psycopg://...]``. Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.db import Database  # noqa: E402
from bridge.errors import Position  # noqa: E402
from mappings.crosswalks import CrosswalkSnapshot, upsert_entries  # noqa: E402

HERE = Position(file="bench")


def per_file(db: Database, size: int, files: int, *, change: bool) -> float:
    """ms per file: a snapshot and 3 lookups, after touching one entry first when ``change``."""
    spent = 0.0
    for i in range(files):
        if change:
            with db.write() as conn:
                upsert_entries(conn, "item", [{"source_code": "S0", "target_code": f"E0-{i}"}])
        t = time.perf_counter()
        snap = CrosswalkSnapshot(db)
        for k in (i, i * 7, i * 13):
            snap.lookup("item", f"S{k % size}", position=HERE)
        spent += time.perf_counter() - t
    return spent / files * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,50000")
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--url", help="database URL (default: a new SQLite file)")
    args = p.parse_args()
    print(f"crosswalk lookups per file ({args.files} files each), ms per file")
    print(f"{'item entries':>14}{'kept':>10}{'after a change':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            url = args.url or f"sqlite:///{tmp}/xw-{uuid.uuid4().hex[:6]}.db"
            db = Database(url)
            db.upgrade()
            with db.write() as conn:
                conn.exec_driver_sql("DELETE FROM crosswalks WHERE kind = 'item'")
                upsert_entries(conn, "item", [{"source_code": f"S{i}", "target_code": f"E{i}"} for i in range(size)])
            per_file(db, size, 1, change=False)  # the process reads the kind once
            kept = per_file(db, size, args.files, change=False)
            changed = per_file(db, size, max(1, args.files // 10), change=True)
            print(f"{size:>14,}{kept:>10.2f}{changed:>16.2f}", flush=True)
            db.dispose()


if __name__ == "__main__":
    main()
