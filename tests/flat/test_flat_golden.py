"""Golden files: each sample in ``tests/samples/flat`` through land + Processor, compared to
``expected/<case>.json`` (file status, records, events, stored failures), on SQLite and PostgreSQL.

Samples are synthetic (no real patients). One sample per kind of bad input
sits beside the good ones (``bad_*``). To regenerate after a deliberate change,
run with ``BRIDGE_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orjson
from sqlalchemy import select

from bridge.db.tables import events, records
from tests.conftest import SAMPLES
from tests.pipeline.flatkit import channel, failure_rows, inbound, ingest, seed

FLAT = SAMPLES / "flat"

FW = {"type": "fixed_width", "skip_prefixes": ["H", "T"], "columns": [
    {"name": "timestamp", "start": 1, "width": 14},
    {"name": "item", "start": 15, "width": 8},
    {"name": "quantity", "start": 23, "width": 5},
    {"name": "unit", "start": 28, "width": 3},
    {"name": "department", "start": 31, "width": 6},
    {"name": "transaction_type", "start": 37, "width": 1},
    {"name": "lot", "start": 38, "width": 8, "required": False},
]}
CABINET = {"type": "inventory_movement_csv", "timezone": "America/Chicago", "location": "MAIN"}

#: case file -> (parser block, mapping block), as they would sit in bridge.yaml
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "consumption_aliases.csv": ({"type": "csv", "aliases": {"item": ["Item #"], "location": ["cabinet"]}}, CABINET),
    "consumption_pipe_cp1252.txt": ({"type": "csv", "delimiter": "|", "encoding": "cp1252"}, CABINET),
    "consumption_fixed.txt": (FW, CABINET),
    "item_master.csv": ({"type": "csv"}, {"type": "item_csv"}),
    **{p.name: ({"type": "csv"}, CABINET) for p in sorted(FLAT.glob("bad_*"))},
}


def outcome(db, inbound_id: int) -> dict[str, Any]:
    row = inbound(db, inbound_id)
    return {
        "status": row.status,
        "messages": row.message_count,
        "records": [orjson.loads(r.data) for r in rows_of(db, records, inbound_id)],
        "events": [{k: e[k] for k in ("event_type", "aggregate_type", "aggregate_id")}
                   for e in rows_of(db, events, inbound_id)],
        "failures": [{k: f[k] for k in ("message_index", "category", "reason", "kind", "key", "position")}
                     for f in failure_rows(db, inbound_id)],
    }


def rows_of(db, table, inbound_id: int) -> list[Any]:
    order = table.c.seq if table is events else table.c.id
    with db.read() as conn:
        return list(conn.execute(select(table).where(table.c.inbound_id == inbound_id).order_by(order)).mappings())


def test_golden(db, archive):
    """One database for all cases (migrations are the slow part); each case is its own channel."""
    seed(db)
    mismatched = []
    for case, (parser, mapping) in sorted(CASES.items()):
        stem = case.rsplit(".", 1)[0]
        landed, _ = ingest(db, archive, (FLAT / case).read_bytes(), name=case,
                           ch=channel(stem, parser=parser, mapping=mapping))
        got = outcome(db, landed.inbound_id)
        expected_path = FLAT / "expected" / f"{stem}.json"
        if os.environ.get("BRIDGE_REGEN_GOLDEN"):
            expected_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        assert expected_path.exists(), f"no golden file {expected_path.name}; run with BRIDGE_REGEN_GOLDEN=1"
        if got != json.loads(expected_path.read_text(encoding="utf-8")):
            mismatched.append((case, got))
    assert not mismatched, json.dumps(mismatched, indent=1, ensure_ascii=False)[:6000]
