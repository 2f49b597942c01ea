"""Group commit on both backends: ``land_many`` (one barrier, one transaction) and ``Processor.process_many``.

The MLLP listener lands and processes messages that arrive together as one
group; each message must still come out exactly as if it had been alone:
its own inbound row, duplicate rule, records, failures and status.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import failures, inbound_files, records
from bridge.pipeline import process as process_module
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
    # the group's bytes went into one pack file; each row says where its own are, read back from the row
    packs = {by_id[x.inbound_id].pack for x in got}  # type: ignore[attr-defined]
    assert len(packs) == 1 and None not in packs
    assert [p.name for p in archive.root.glob("??/??/*")] == [before.sha256]  # no object per unit
    for x, data in zip(got, (a, b, b, c), strict=True):
        assert x.sha256 == hashlib.sha256(data).hexdigest()
        with archive.open_landed(by_id[x.inbound_id]) as f:
            assert f.read() == data
        with archive.open_landed(x) as f:
            assert f.read() == data
    assert list(archive.tmp.iterdir()) == []  # no temp file left behind


def test_groups_append_to_one_pack_file_and_read_back_after_a_restart(db: Database, tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    groups = [[dft_p03(f"PACK-{g}-{i}") for i in range(3)] for g in range(4)]
    landed = [land_many(db, archive, channel="mllp", units=[Unit(m, f"{g}-{i}.hl7") for i, m in enumerate(msgs)])
              for g, msgs in enumerate(groups)]
    assert len({x.pack for group in landed for x in group}) == 1  # one thread: one open pack file
    again = Archive(tmp_path / "archive")  # another process (a restart) reads by the rows
    by_id = rows(db, [x.inbound_id for group in landed for x in group])
    for group, msgs in zip(landed, groups, strict=True):
        for x, data in zip(group, msgs, strict=True):
            with again.open_landed(by_id[x.inbound_id]) as f:
                assert f.read() == data
    # a new writer (this one, after a restart) starts its own pack file: it never appends behind another's tail
    [first, _, _] = land_many(db, again, channel="mllp", units=[Unit(dft_p03(f"PACK-NEW-{i}"), f"n{i}.hl7")
                                                                for i in range(3)])
    assert first.pack != landed[0][0].pack and first.pack_offset == 0


def test_a_landed_name_is_synced_in_its_folder_before_its_row_is_written(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename or a new pack file survives a power loss only once its folder is synced (POSIX: fsync of the
    file covers its bytes, not its name). The folders synced are recorded as the landing makes them."""
    archive = Archive(tmp_path / "archive")
    synced: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            synced.append(path)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    one = land(db, archive, channel="files", src=io.BytesIO(b"MSH|^~\\&|A|B\r"), name="one.hl7")
    folder = archive.path_for(one.sha256).parent
    # the object's folder, and the two folders made for it, each in its parent
    assert set(synced) >= {folder, folder.parent, archive.root}
    synced.clear()
    first, _second = land_many(db, archive, channel="mllp", units=[Unit(dft_p03("DIR-1"), "1.hl7"),
                                                                    Unit(dft_p03("DIR-2"), "2.hl7")])
    day = (archive.root / first.pack).parent
    assert set(synced) == {day, day.parent, archive.root}  # a new pack: its day folder, made under packs/
    synced.clear()
    land_many(db, archive, channel="mllp", units=[Unit(dft_p03("DIR-3"), "3.hl7"), Unit(dft_p03("DIR-4"), "4.hl7")])
    assert synced == []  # an open pack: each group is one fdatasync of the file, no folder to sync


def test_a_unit_whose_pack_is_cut_short_reads_as_missing(db: Database, archive: Archive) -> None:
    first, second = land_many(db, archive, channel="mllp", units=[Unit(dft_p03("CUT-1"), "1.hl7"),
                                                                   Unit(dft_p03("CUT-2"), "2.hl7")])
    assert first.pack == second.pack is not None
    with open(archive.root / first.pack, "r+b") as fh:
        fh.truncate(first.size + 10)
    with archive.open_landed(first) as f:
        assert f.read() == dft_p03("CUT-1")
    with pytest.raises(FileNotFoundError, match="ends before unit"):
        archive.open_landed(second)


def test_a_pack_name_that_is_not_one_of_the_archive_is_never_opened(archive: Archive) -> None:
    class Row:
        sha256, size, pack, pack_offset = "0" * 64, 10, "../../etc/passwd", 0

    with pytest.raises(FileNotFoundError, match="not a pack of this archive"):
        archive.open_landed(Row())


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


def test_units_landed_with_a_lease_are_processed_by_its_holder_only(db: Database, archive: Archive,
                                                                    tmp_path: Path) -> None:
    proc = processor(db, archive, tmp_path)
    before = land(db, archive, channel="mllp", src=io.BytesIO(dft_p03("LEASE-OLD")), name="old.hl7")
    got = land_many(db, archive, channel="mllp", lease=proc.lease(),
                    units=[Unit(dft_p03("LEASE-1"), "1.hl7"), Unit(dft_p03("LEASE-OLD"), "again.hl7")])
    new, dup = got
    assert new.row is not None and new.row.status == "processing" and new.row.claimed_by == proc.owner
    assert dup.duplicate_of == before.inbound_id and dup.row is None  # a duplicate is never claimed
    # the claimed row is built from what was inserted, not read back: it is what the database holds, column
    # for column (the table's defaults included)
    with db.read() as conn:
        stored = conn.execute(select(inbound_files).where(inbound_files.c.id == new.inbound_id)).one()
    assert new.row._asdict() == stored._asdict()
    assert (new.row.progress, new.row.attempts, new.row.origin) == (-1, 1, "")
    other = Processor(db, archive, proc.channels, owner="someone-else")
    assert other.claim(new.inbound_id) is None and other.run_once() is not None  # only the old file is free
    results = proc.process_many([new.inbound_id], claimed=[new.row], data={new.inbound_id: dft_p03("LEASE-1")})
    assert results[new.inbound_id].status == "processed" and results[new.inbound_id].records == 3
    by_id = rows(db, [new.inbound_id])
    assert (by_id[new.inbound_id].status, by_id[new.inbound_id].claimed_by,  # type: ignore[attr-defined]
            by_id[new.inbound_id].attempts) == ("processed", None, 1)  # type: ignore[attr-defined]


def test_a_commit_is_on_disk_before_anyone_is_answered(db: Database) -> None:
    """A landed row's commit must survive a power loss: senders delete files and take AA as soon as it returns.

    SQLite in WAL mode with ``synchronous=NORMAL`` syncs only at checkpoints (a committed transaction
    can roll back after an OS crash); bridge's connections use FULL. PostgreSQL keeps
    ``synchronous_commit`` on: bridge never turns it off for a session.
    """
    for connect in (db.write, db.read):
        with connect() as conn:
            if db.is_sqlite:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            else:
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def test_postgresql_plans_a_groups_lookups_on_fresh_statistics(pg_db: Database, archive: Archive, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast-growing tables are analyzed as they grow: without statistics PostgreSQL looked a group's sha256s up
    through ``channel`` alone and filtered every landed row of the channel, each group slower than the last."""
    monkeypatch.setattr(process_module, "_ANALYZE_MIN", 5)  # a real table would be analyzed after 5,000 records
    proc = processor(pg_db, archive, tmp_path)
    units = [Unit(dft_p03(f"STATS-{i}"), f"{i}.hl7") for i in range(40)]
    with pg_db.write() as conn:
        landed = land_many(pg_db, archive, channel="mllp", units=units, lease=proc.lease(), conn=conn)
        results, inserted = proc.process_in(conn, [x.row for x in landed], {x.inbound_id: u.data
                                                                          for x, u in zip(landed, units, strict=True)})
    assert inserted == 120 and {r.status for r in results.values()} == {"processed"}
    assert reltuples(pg_db) == {"inbound_files": -1, "records": -1, "message_keys": -1}  # never analyzed
    # the refresh runs beside the caller: an MLLP group's ACKs do not wait for it. Here it waits for a
    # lock another transaction holds (ANALYZE's own lock mode), while the caller goes on
    with pg_db.engine.connect() as other, other.begin():
        other.exec_driver_sql("LOCK TABLE records IN SHARE UPDATE EXCLUSIVE MODE")
        caller = threading.Thread(target=proc.committed, args=(inserted,))
        caller.start()
        caller.join(5)
        assert not caller.is_alive(), "committed() waited for the ANALYZE"
        time.sleep(0.3)
        assert reltuples(pg_db)["records"] == -1  # still waiting for the lock
    process_module._statistics(pg_db.url).wait(30)
    assert reltuples(pg_db) == {"inbound_files": 40, "records": 120, "message_keys": 40}


def reltuples(db: Database) -> dict[str, float]:
    with db.read() as conn:
        return dict(conn.exec_driver_sql(  # type: ignore[arg-type]
            "SELECT relname, reltuples FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relname IN ('inbound_files', 'records', 'message_keys')").all())
