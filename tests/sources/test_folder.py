"""The folder source through a real Runtime: completeness rules, archiving, duplicates, odd names."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.db import Database
from bridge.runtime import Runtime
from tests.helpers import (
    consumption_csv,
    event_count,
    folder_channel,
    inbound_rows,
    record_count,
    seed_crosswalks,
    settings_for,
    wait_for,
)


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    return d


@pytest.fixture
def start_runtime(tmp_path: Path, db_url: str, db: Database) -> Iterator[Any]:
    started: list[Runtime] = []

    def start(channels: dict[str, Any]) -> Runtime:
        seed_crosswalks(db)
        rt = Runtime(settings_for(tmp_path, db_url, channels), db=Database(db_url))
        rt.start()
        started.append(rt)
        return rt

    yield start
    for rt in started:
        rt.stop()
        rt.db.dispose()


def archived(drop: Path) -> list[str]:
    return sorted(p.name for p in (drop / "archive").rglob("*") if p.is_file()) if (drop / "archive").exists() else []


def test_dropped_file_lands_processes_and_is_archived(drop: Path, start_runtime: Any, db: Database) -> None:
    start_runtime({"cab": folder_channel(drop)})
    (drop / "consumption.csv").write_bytes(consumption_csv(5))
    wait_for(lambda: record_count(db) == 5)
    wait_for(lambda: archived(drop) == ["consumption.csv"])
    assert not (drop / "consumption.csv").exists()
    rows = inbound_rows(db)
    assert [(r.name, r.status, r.message_count) for r in rows] == [("consumption.csv", "processed", 5)]
    assert event_count(db) == 5


def test_files_present_at_start_are_taken(drop: Path, start_runtime: Any, db: Database) -> None:
    (drop / "a.csv").write_bytes(consumption_csv(2))
    (drop / "b.csv").write_bytes(consumption_csv(3, start=10))
    start_runtime({"cab": folder_channel(drop)})
    wait_for(lambda: record_count(db) == 5)
    assert archived(drop) == ["a.csv", "b.csv"]


def test_file_still_being_written_is_not_taken_until_it_settles(drop: Path, start_runtime: Any, db: Database) -> None:
    start_runtime({"cab": folder_channel(drop, settle_seconds=1.0)})
    data = consumption_csv(50)
    chunks = [data[i : i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]
    with open(drop / "growing.csv", "wb") as fh:
        # a slow writer: a chunk every 0.3 s, for longer than the settle interval in total
        for chunk in chunks[:-1]:
            fh.write(chunk)
            fh.flush()
            time.sleep(0.3)
            assert inbound_rows(db) == [], "a file that is still growing was landed"
        fh.write(chunks[-1])
    wait_for(lambda: record_count(db) == 50)
    rows = inbound_rows(db)
    assert len(rows) == 1 and rows[0].size == len(data)


def test_rename_into_place_ignores_temp_names(drop: Path, start_runtime: Any, db: Database) -> None:
    start_runtime({"cab": folder_channel(drop, read_lock="rename")})
    tmp = drop / "upload.csv.part"
    tmp.write_bytes(consumption_csv(3))
    time.sleep(1.0)
    assert inbound_rows(db) == []
    os.rename(tmp, drop / "upload.csv")
    wait_for(lambda: record_count(db) == 3)


def test_done_marker(drop: Path, start_runtime: Any, db: Database) -> None:
    start_runtime({"cab": folder_channel(drop, read_lock="done_marker")})
    (drop / "batch.csv").write_bytes(consumption_csv(2))
    time.sleep(1.0)
    assert inbound_rows(db) == []
    (drop / "batch.csv.done").write_bytes(b"")
    wait_for(lambda: record_count(db) == 2)
    wait_for(lambda: not (drop / "batch.csv.done").exists())


def test_same_file_dropped_twice_is_recorded_as_duplicate(drop: Path, start_runtime: Any, db: Database) -> None:
    start_runtime({"cab": folder_channel(drop)})
    data = consumption_csv(4)
    (drop / "first.csv").write_bytes(data)
    wait_for(lambda: record_count(db) == 4)
    (drop / "again.csv").write_bytes(data)
    wait_for(lambda: len(inbound_rows(db)) == 2)
    wait_for(lambda: "again.csv" in archived(drop))
    rows = inbound_rows(db)
    assert [r.status for r in rows] == ["processed", "duplicate"]
    assert rows[1].duplicate_of == rows[0].id
    assert record_count(db) == 4 and event_count(db) == 4


def test_odd_names_and_symlinks_stay_in_the_jail(drop: Path, tmp_path: Path, start_runtime: Any, db: Database) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_bytes(consumption_csv(7, start=100))
    os.symlink(outside, drop / "link.csv")
    (drop / "sub").mkdir()
    (drop / "sub" / "nested.csv").write_bytes(consumption_csv(1, start=200))
    odd = "weird  naïve name (1)..csv"
    (drop / ".hidden.csv").write_bytes(consumption_csv(1, start=400))
    (drop / odd).write_bytes(consumption_csv(2))
    (drop / "-rf.csv").write_bytes(consumption_csv(1, start=300))
    start_runtime({"cab": folder_channel(drop)})
    wait_for(lambda: record_count(db) == 3)
    time.sleep(0.8)
    names = sorted(r.name for r in inbound_rows(db))
    assert names == sorted([odd, "-rf.csv"])
    assert outside.exists() and (drop / "link.csv").is_symlink()
    assert (drop / "sub" / "nested.csv").exists()
    assert sorted(archived(drop)) == sorted([odd, "-rf.csv"])


def test_after_keep_takes_a_file_once_and_a_changed_file_again(drop: Path, start_runtime: Any, db: Database) -> None:
    start_runtime({"cab": folder_channel(drop, after="keep")})
    f = drop / "standing.csv"
    f.write_bytes(consumption_csv(2))
    wait_for(lambda: record_count(db) == 2)
    time.sleep(1.2)
    assert len(inbound_rows(db)) == 1
    f.write_bytes(consumption_csv(3, start=50))
    wait_for(lambda: record_count(db) == 5)
    assert len(inbound_rows(db)) == 2 and f.exists()
