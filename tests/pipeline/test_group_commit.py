"""Group commit on both backends: ``land_many`` (one barrier, one transaction) and ``Processor.process_many``.

The MLLP listener lands and processes messages that arrive together as one
group; each message must still come out exactly as if it had been alone:
its own inbound row, duplicate rule, records, failures and status.
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import failures, inbound_files, records
from bridge.pipeline.land import Archive, Unit, land, land_many
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig
from mappings.crosswalks import upsert_entries
from tests.hl7.messages import DEPARTMENTS, ITEMS, dft_p03


def processor(db: Database, archive: Archive, tmp: Path) -> Processor:
    with db.write() as conn:
        upsert_entries(conn, "department", [{"source_code": k, "target_code": v} for k, v in DEPARTMENTS.items()])
        upsert_entries(conn, "item", [{"source_code": k, "target_code": v} for k, v in ITEMS.items()])
    cfg = ChannelConfig.model_validate({"source": {"type": "folder", "path": str(tmp)}, "parser": {"type": "hl7"},
                                        "mapping": {"type": "hl7_dft_p03"}})
    return Processor(db, archive, {"mllp": build_channel("mllp", cfg)})


def rows(db: Database, ids: list[int]) -> dict[int, object]:
    with db.read() as conn:
        return {r.id: r for r in conn.execute(select(inbound_files).where(inbound_files.c.id.in_(ids)))}


def test_land_many_keeps_each_unit_and_the_duplicate_rule(db: Database, archive: Archive) -> None:
    a, b, c = dft_p03("LM-A"), dft_p03("LM-B"), dft_p03("LM-C")
    before = land(db, archive, channel="mllp", src=io.BytesIO(a), name="a.hl7")
    got = land_many(db, archive, channel="mllp",
                    units=[Unit(a, "a2.hl7", "mllp://x"), Unit(b, "b.hl7"), Unit(b, "b2.hl7"), Unit(c, "c.hl7")])
    assert [x.duplicate_of for x in got] == [before.inbound_id, None, got[1].inbound_id, None]
    assert len({x.inbound_id for x in got}) == 4
    by_id = rows(db, [x.inbound_id for x in got])
    assert [by_id[x.inbound_id].status for x in got] == ["duplicate", "landed", "duplicate", "landed"]  # type: ignore[attr-defined]
    assert [by_id[x.inbound_id].name for x in got] == ["a2.hl7", "b.hl7", "b2.hl7", "c.hl7"]  # type: ignore[attr-defined]
    assert by_id[got[0].inbound_id].origin == "mllp://x"  # type: ignore[attr-defined]
    for x, data in zip(got, (a, b, b, c), strict=True):
        with archive.open(x.sha256) as f:
            assert f.read() == data
    assert list(archive.tmp.iterdir()) == []  # no temp file left behind


def test_process_many_commits_each_file_as_if_alone(db: Database, archive: Archive, tmp_path: Path) -> None:
    proc = processor(db, archive, tmp_path)
    units = [
        Unit(dft_p03("PM-1"), "1.hl7"),
        Unit(dft_p03("PM-BADDEPT", department="NOWHERE"), "2.hl7"),
        Unit(b"PID|1||X\rPV1|1\r", "3.hl7"),  # no MSH: unreadable
        Unit(dft_p03("PM-2"), "4.hl7"),
        Unit(dft_p03("PM-1", txn_prefix="again"), "5.hl7"),  # other bytes, same MSH-10 as the first
    ]
    landed = land_many(db, archive, channel="mllp", units=units)
    ids = [x.inbound_id for x in landed]
    results = proc.process_many(ids)
    assert [results[i].status for i in ids] == ["processed", "failed", "failed", "processed", "processed"]
    assert [results[i].records for i in ids] == [3, 0, 0, 3, 0]
    assert [results[i].failures for i in ids] == [0, 1, 1, 0, 0]
    assert results[ids[4]].duplicates == 1
    by_id = rows(db, ids)
    assert [(by_id[i].status, by_id[i].record_count, by_id[i].claimed_by) for i in ids] == [  # type: ignore[attr-defined]
        ("processed", 3, None), ("failed", 0, None), ("failed", 0, None), ("processed", 3, None),
        ("processed", 0, None)]
    with db.read() as conn:
        fails = {r.inbound_id: r for r in conn.execute(select(failures).where(failures.c.inbound_id.in_(ids)))}
        keys = sorted(conn.execute(select(records.c.natural_key).where(records.c.inbound_id.in_(ids))).scalars())
    assert set(fails) == {ids[1], ids[2]}
    assert fails[ids[1]].category == "master_data" and "NOWHERE" in fails[ids[1]].reason
    assert orjson.loads(fails[ids[1]].position)["segment"] == "FT1"
    assert fails[ids[2]].category == "parse"
    assert keys == sorted(f"BILLSYS@GENHOSP:{c}-{i}" for c in ("PM-1", "PM-2") for i in (1, 2, 3))


def test_process_many_leaves_out_files_it_cannot_take(db: Database, archive: Archive, tmp_path: Path) -> None:
    proc = processor(db, archive, tmp_path)
    first, second = land_many(db, archive, channel="mllp",
                              units=[Unit(dft_p03("PT-1"), "1.hl7"), Unit(dft_p03("PT-2"), "2.hl7")])
    assert proc.process(first.inbound_id) is not None
    other = Processor(db, archive, proc.channels, owner="someone-else")
    assert other.claim(second.inbound_id) is not None  # another process holds its lease
    assert proc.process_many([first.inbound_id, second.inbound_id]) == {}
    assert other.process_many([second.inbound_id])[second.inbound_id].status == "processed"
