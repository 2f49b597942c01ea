"""Mutated X12 interchanges, on both backends: whatever the bytes, a file ends processed, partial or failed.

The mutations cut, insert, flip and repeat bytes, put delimiters and envelope segments where they do not
belong, and numbers no field expects. None may raise out of the processor (the TA1 of a bent ISA once
did, on every retry of the file), and no mapping may fail on a shape it did not foresee.
"""

from __future__ import annotations

import collections
import io
import random

from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import failures
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig
from tests.helpers import mutate
from tests.x12.conftest import sample

SETS = {"810": "x12_810", "832": "x12_832", "835": "x12_835", "837i": "x12_837", "837p": "x12_837",
        "850": "x12_850", "855": "x12_855", "856": "x12_856"}
MARKS = [b"*", b"~", b":", b"^", b"\n", b"ISA*", b"GS*", b"ST*", b"SE*", b"GE*", b"IEA*", b"HL*", b"CLM*", b"N1*",
         b"IT1*", b"LIN*", b"-1", b"0", b"999999999999", b"1.5E10", b"NaN", b"1e400"]


def test_mutated_interchanges_end_processed_partial_or_failed(db: Database, archive: Archive) -> None:
    channels = {kind: build_channel(kind, ChannelConfig.model_validate({
        "source": {"type": "folder", "path": "/nonexistent"}, "parser": {"type": "x12"}, "mapping": {"type": m}}))
        for kind, m in SETS.items()}
    proc = Processor(db, archive, channels)
    samples = {kind: sample(f"{kind}.x12") for kind in SETS}
    rng = random.Random(7)
    statuses: collections.Counter[str] = collections.Counter()
    for i in range(400):
        kind = rng.choice(sorted(SETS))
        landed = land(db, archive, channel=kind, src=io.BytesIO(mutate(rng, samples[kind], MARKS)), name=f"fuzz-{i}.x12")
        result = proc.process(landed.inbound_id)
        if landed.duplicate:
            assert result is None
            continue
        assert result is not None
        statuses[str(result.status)] += 1
    assert set(statuses) == {"processed", "partial", "failed"}, statuses
    with db.read() as conn:
        reasons = conn.execute(select(failures.c.category, failures.c.reason)).all()
    assert reasons and [r for c, r in reasons if c == "mapping" and " failed: " in r] == []
