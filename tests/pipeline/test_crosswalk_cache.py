"""Crosswalk entries are kept between files, and every change reaches the next file, whoever made it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, event, text

from bridge.db import Database
from bridge.db.tables import crosswalks
from bridge.errors import MasterDataError, Position
from mappings.crosswalks import CrosswalkSnapshot, deactivate, upsert_entries

HERE = Position(file="f.hl7")


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def item(db: Database, code: str) -> str:
    return CrosswalkSnapshot(db).lookup("item", code, position=HERE)


@pytest.fixture
def seeded(db: Database) -> Database:
    with db.write() as conn:
        upsert_entries(conn, "item", [{"source_code": "A1", "target_code": "ERP-1"},
                                      {"source_code": "B2", "target_code": "ERP-2"}])
        upsert_entries(conn, "department", [{"source_code": "LAB", "target_code": "CC-1"}])
    return db


def test_an_unchanged_crosswalk_is_read_once_per_process_not_once_per_file(seeded: Database) -> None:
    assert item(seeded, "A1") == "ERP-1"
    with statements(seeded) as seen:
        for _ in range(5):
            snap = CrosswalkSnapshot(seeded)
            assert snap.lookup("item", "B2", position=HERE) == "ERP-2"
            assert snap.lookup("department", "LAB", position=HERE) == "CC-1"
    entry_reads = [s for s in seen if "FROM crosswalks" in s]
    version_reads = [s for s in seen if "FROM crosswalk_state" in s]
    assert len(entry_reads) == 1  # department, first used here; item kept from the first file
    assert len(version_reads) == 5  # one per file


@pytest.mark.parametrize("change", ["upsert", "deactivate", "sql_update", "sql_delete"])
def test_a_change_by_any_path_reaches_the_next_file(seeded: Database, change: str) -> None:
    assert item(seeded, "A1") == "ERP-1"
    in_use = CrosswalkSnapshot(seeded)
    assert in_use.lookup("item", "A1", position=HERE) == "ERP-1"
    with seeded.write() as conn:
        if change == "upsert":
            upsert_entries(conn, "item", [{"source_code": "A1", "target_code": "ERP-9"}])
        elif change == "deactivate":
            assert deactivate(conn, "item", "A1")
        elif change == "sql_update":  # a DBA's fix, outside bridge's code
            conn.execute(text("UPDATE crosswalks SET target_code = 'ERP-9' WHERE source_code = 'A1'"))
        else:
            conn.execute(delete(crosswalks).where(crosswalks.c.source_code == "A1"))
    if change in ("upsert", "sql_update"):
        assert item(seeded, "A1") == "ERP-9"
    else:
        with pytest.raises(MasterDataError, match="A1"):
            item(seeded, "A1")
    # a file being mapped keeps the entries it started with
    assert in_use.lookup("item", "A1", position=HERE) == "ERP-1"


def test_a_snapshot_given_a_transaction_reads_in_it(seeded: Database) -> None:
    """An MLLP group maps inside its write transaction: its snapshot reads there, with no read transaction
    (and on PostgreSQL no second connection) of its own, and what it reads is kept for the next snapshot."""
    with seeded.write() as conn, statements(seeded) as seen:
        snap = CrosswalkSnapshot(seeded, conn)
        assert snap.lookup("item", "A1", position=HERE) == "ERP-1"
        assert snap.lookup("department", "LAB", position=HERE) == "CC-1"
    assert [s for s in seen if "crosswalk" in s] != []  # read here, first use in this process
    assert [s for s in seen if s.split()[0].upper() == "BEGIN"] == [], seen  # the caller's BEGIN came before
    with statements(seeded) as seen:
        assert item(seeded, "A1") == "ERP-1"
    assert [s for s in seen if "FROM crosswalks" in s] == []  # kept
