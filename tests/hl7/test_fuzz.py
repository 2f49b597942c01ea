"""Mutated HL7 files, on both backends: whatever the bytes, a file ends processed, partial or failed.

The mutations cut, insert, flip and repeat bytes, and put delimiters, escape sequences and batch
headers where they do not belong. None may raise out of the processor, and no mapping may fail on a
shape it did not foresee (that is a bug, quarantined as "mapping ... failed: <exception type>").
Every failure names its file and where in it.
"""

from __future__ import annotations

import collections
import io
import random
from pathlib import Path

import orjson
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import failures
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig
from mappings.crosswalks import upsert_entries
from tests.helpers import mutate as bent
from tests.hl7.messages import DEPARTMENTS, ITEMS, SAMPLES

MAPPINGS = {"dft": ("dft_p03*.hl7", "hl7_dft_p03"), "adt": ("adt_*.hl7", "hl7_adt"), "mfn": ("mfn_*.hl7", "hl7_mfn")}
MARKS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\\X0\\", b"\\E\\", b"\\Z99\\", b"MSH|", b"FHS|", b"BHS|",
         b"BTS|", b"FTS|"]
#: a field separator mistaken for another, or doubled or lost; components likewise
SWAPS = [(b"|", [b"#", b"||", b""]), (b"^", [b"^^", b"", b"~"])]


def mutate(rng: random.Random, data: bytes) -> bytes:
    return bent(rng, data, MARKS, SWAPS)


def test_mutated_files_end_processed_partial_or_failed_with_a_reason(db: Database, archive: Archive,
                                                                      tmp_path: Path) -> None:
    with db.write() as conn:
        upsert_entries(conn, "department", [{"source_code": k, "target_code": v} for k, v in DEPARTMENTS.items()])
        upsert_entries(conn, "item", [{"source_code": k, "target_code": v} for k, v in ITEMS.items()])
    channels = {kind: build_channel(kind, ChannelConfig.model_validate({
        "source": {"type": "folder", "path": str(tmp_path)}, "parser": {"type": "hl7"}, "mapping": {"type": mapping}}))
        for kind, (_glob, mapping) in MAPPINGS.items()}
    samples = {kind: [p.read_bytes() for p in sorted(SAMPLES.glob(glob))] for kind, (glob, _m) in MAPPINGS.items()}
    assert all(samples.values())
    proc = Processor(db, archive, channels)
    rng = random.Random(5)
    statuses: collections.Counter[str] = collections.Counter()
    for i in range(400):
        kind = rng.choice(sorted(samples))
        landed = land(db, archive, channel=kind, src=io.BytesIO(mutate(rng, rng.choice(samples[kind]))),
                      name=f"fuzz-{i}.hl7")
        result = proc.process(landed.inbound_id)
        if landed.duplicate:  # the same mutation twice: landed once, never processed again
            assert result is None
            continue
        assert result is not None
        statuses[str(result.status)] += 1
    # the mutations reach every outcome, so the run says something about each
    assert set(statuses) == {"processed", "partial", "failed"} and statuses["failed"] > 100, statuses
    with db.read() as conn:
        opened = conn.execute(select(failures.c.category, failures.c.reason, failures.c.position)).all()
    bugs = [f.reason for f in opened if f.category == "mapping" and " failed: " in f.reason]
    assert bugs == []
    for f in opened:
        position = orjson.loads(f.position)
        assert f.reason and position.get("file", "").startswith("fuzz-"), (f.reason, position)
