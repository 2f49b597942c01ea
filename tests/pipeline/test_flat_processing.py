"""Processing guarantees on flat files: duplicates, reprocess, all-or-nothing, crash-resume, claims and leases.

Every test runs on SQLite and PostgreSQL (the ``db`` fixture) and checks what
is stored: records, events, failures and the inbound file's row.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bridge.db import utcnow
from bridge.db.tables import events, inbound_files, records
from bridge.pipeline.process import Processor
from bridge.settings import ProcessingConfig
from mappings.flat_inventory_movement import InventoryMovementMapping
from tests.pipeline.flatkit import (
    add_crosswalk,
    channel,
    consumption,
    count,
    event_rows,
    failure_rows,
    inbound,
    ingest,
    land_bytes,
    record_data,
    seed,
)

ROWS = [f"2026-03-01 08:{m:02d}:00,ITM{m % 3 + 1},{m + 1},EA,ICU,,,issue" for m in range(10)]


def test_same_file_landed_twice_is_a_duplicate_not_processed_again(db, archive):
    seed(db)
    data = consumption(*ROWS[:3])
    first, result = ingest(db, archive, data, name="a.csv")
    assert result.status == "processed"
    again = land_bytes(db, archive, data, name="a-copy.csv")
    assert again.duplicate and again.duplicate_of == first.inbound_id
    row = inbound(db, again.inbound_id)
    assert (row.status, row.duplicate_of, row.sha256) == ("duplicate", first.inbound_id, first.sha256)
    ch = channel()
    proc = Processor(db, archive, {ch.name: ch})
    assert proc.process(again.inbound_id) is None
    assert proc.run_once() is None
    assert (count(db, records), count(db, events)) == (3, 3)


def test_reprocess_after_adding_the_missing_crosswalk_entry(db, archive):
    seed(db)
    data = consumption(ROWS[0], "2026-03-01 09:00:00,NEW7,4,EA,ICU,,,issue", ROWS[1])
    landed, result = ingest(db, archive, data)
    assert result.status == "partial"
    [f] = failure_rows(db, landed.inbound_id)
    assert (f["category"], f["key"], f["message_index"]) == ("master_data", "NEW7", 1)

    add_crosswalk(db, "item", "NEW7", "ERP-77")
    ch = channel()
    proc = Processor(db, archive, {ch.name: ch})
    again = proc.reprocess(landed.inbound_id)
    assert again is not None and (again.status, again.resolved, again.records, again.events) == ("processed", 1, 1, 1)
    assert failure_rows(db, landed.inbound_id) == []
    [resolved] = failure_rows(db, landed.inbound_id, status="resolved")
    assert resolved["resolved_by"] == "reprocess"
    assert sorted(r["item"] for r in record_data(db)) == ["ERP-1", "ERP-2", "ERP-77"]
    row = inbound(db, landed.inbound_id)
    assert (row.status, row.failure_count, row.record_count) == ("processed", 0, 3)

    # a second reprocess (nothing open) and a full re-run of every message change nothing
    before = event_rows(db)
    assert proc.reprocess(landed.inbound_id).records == 0
    assert proc.reprocess(landed.inbound_id, indexes={0, 1, 2}).events == 0
    with db.write() as conn:
        conn.execute(update(inbound_files).where(inbound_files.c.id == landed.inbound_id)
                     .values(status="landed", progress=-1))
    assert proc.process(landed.inbound_id).events == 0
    assert count(db, records) == 3
    assert event_rows(db) == before
    assert [e["event_type"] for e in before] == ["inventory.movement.recorded"] * 3


def test_changed_content_under_the_same_key_is_one_updated_event(db, archive):
    seed(db)
    header = "transaction_id,timestamp,item,quantity,unit,department,transaction_type\n"
    ingest(db, archive, consumption("T1,2026-03-01 08:00:00,ITM1,1,EA,ICU,issue", header=header), name="a.csv")
    ingest(db, archive, consumption("T1,2026-03-01 08:00:00,ITM1,5,EA,ICU,issue", header=header), name="b.csv")
    assert [r["quantity"] for r in record_data(db)] == ["5"]
    assert [e["event_type"] for e in event_rows(db)] == ["inventory.movement.recorded", "inventory.movement.updated"]


def test_all_or_nothing_channel_commits_nothing_until_every_row_maps(db, archive):
    seed(db)
    ch = channel(all_or_nothing=True)
    data = consumption(ROWS[0], "2026-03-01 09:00:00,NEW7,4,EA,ICU,,,issue", ROWS[1])
    landed, result = ingest(db, archive, data, ch=ch, name="aon.csv")
    assert result.status == "failed"
    assert (count(db, records), count(db, events)) == (0, 0)
    fails = failure_rows(db, landed.inbound_id)
    assert [(f["message_index"], f["category"]) for f in fails] == [(-1, "parse"), (1, "master_data")]
    assert fails[0]["reason"] == "file is all-or-nothing: 1 of 3 messages failed, nothing committed"
    assert inbound(db, landed.inbound_id).status == "failed"

    add_crosswalk(db, "item", "NEW7", "ERP-77")
    again = Processor(db, archive, {ch.name: ch}).reprocess(landed.inbound_id)
    assert again.status == "processed"
    assert (count(db, records), count(db, events)) == (3, 3)
    assert failure_rows(db, landed.inbound_id) == []


class _Crash(InventoryMovementMapping):
    """Dies (like a killed process) on the message with index ``at``, once."""

    at = -1

    def map(self, message, ctx, *, key_only=False):
        if not key_only and message.index == type(self).at:
            type(self).at = -1
            raise KeyboardInterrupt
        return super().map(message, ctx, key_only=key_only)


def test_crash_mid_file_resumes_without_duplicates(db, archive):
    seed(db)
    # rows 4 and 5 are identical: two movements, told apart by their ordinal in the file
    rows = [*ROWS[:4], ROWS[3], *ROWS[4:9]]
    ch = channel()
    ch.mapping = _Crash()
    _Crash.at = 7
    landed = land_bytes(db, archive, consumption(*rows))
    dying = Processor(db, archive, {ch.name: ch}, ProcessingConfig(batch_size=3), owner="dying")
    with pytest.raises(KeyboardInterrupt):
        dying.process(landed.inbound_id)
    row = inbound(db, landed.inbound_id)
    assert (row.status, row.progress, row.claimed_by) == ("processing", 5, "dying")
    assert (count(db, records), count(db, events)) == (6, 6)

    fresh = Processor(db, archive, {ch.name: ch}, ProcessingConfig(batch_size=3), owner="fresh")
    assert fresh.run_once() is None  # the dead process's lease still holds
    with db.write() as conn:  # ... until it expires
        conn.execute(update(inbound_files).values(claimed_until=utcnow() - timedelta(seconds=1)))
    result = fresh.run_once()
    assert result is not None and result.status == "processed"
    assert (count(db, records), count(db, events)) == (10, 10)
    assert len({r["movement_id"] for r in record_data(db)}) == 10
    row = inbound(db, landed.inbound_id)
    assert (row.status, row.progress, row.claimed_by, row.attempts) == ("processed", 9, None, 2)


def test_two_processors_claiming_one_file_only_one_processes_it(db, archive):
    seed(db)
    landed = land_bytes(db, archive, consumption(*ROWS))
    ch = channel()
    a = Processor(db, archive, {ch.name: ch}, owner="a")
    b = Processor(db, archive, {ch.name: ch}, owner="b")
    claimed = a.claim(landed.inbound_id)
    assert claimed is not None and claimed.claimed_by == "a"
    assert b.claim(landed.inbound_id) is None
    assert b.process(landed.inbound_id) is None
    assert b.run_once() is None
    assert a.process_claimed(claimed).status == "processed"
    assert b.process(landed.inbound_id) is None  # processed files are not claimed again
    assert (count(db, records), count(db, events)) == (10, 10)


def test_expired_lease_is_taken_over(db, archive):
    seed(db)
    landed = land_bytes(db, archive, consumption(*ROWS))
    ch = channel()
    dead = Processor(db, archive, {ch.name: ch}, ProcessingConfig(lease_seconds=30), owner="dead")
    assert dead.claim(landed.inbound_id) is not None
    heir = Processor(db, archive, {ch.name: ch}, owner="heir")
    assert heir.process(landed.inbound_id) is None
    with db.write() as conn:
        conn.execute(update(inbound_files).where(inbound_files.c.id == landed.inbound_id)
                     .values(claimed_until=utcnow() - timedelta(seconds=1)))
    result = heir.process(landed.inbound_id)
    assert result is not None and result.status == "processed"
    assert (count(db, records), count(db, events)) == (10, 10)
    assert inbound(db, landed.inbound_id).claimed_by is None


def test_events_follow_the_file_order(db, archive):
    seed(db)
    ingest(db, archive, consumption(*ROWS), batch_size=4)
    evs = event_rows(db)
    with db.read() as conn:
        index_of = dict(conn.execute(select(records.c.id, records.c.message_index)).all())
    assert [index_of[e["record_id"]] for e in evs] == list(range(10))
    assert [e["seq"] for e in evs] == sorted(e["seq"] for e in evs)


def test_identical_rows_are_distinct_movements_and_the_count_stays_bounded(db, archive, monkeypatch):
    import mappings.flat_inventory_movement as mod

    monkeypatch.setattr(mod, "ORDINAL_WINDOW", 3)
    seed(db)
    twin = ROWS[0]
    # the twins sit together: counted 1, 2; seven other rows later the count is forgotten
    landed, result = ingest(db, archive, consumption(twin, twin, *ROWS[1:8], twin))
    keys = [r["movement_id"] for r in record_data(db)]
    assert len(keys) == 9 and keys[0].endswith(":1") and keys[1].endswith(":2")
    assert keys[0].rsplit(":", 1)[0] == keys[1].rsplit(":", 1)[0]
    # the last twin came after the window forgot it: taken as the first one again, not a third record
    assert result.records == 9 and result.messages == 10
    with db.write() as conn:  # a full re-run numbers every row as the first run did
        conn.execute(update(inbound_files).values(status="landed", progress=-1))
    again = Processor(db, archive, {"cabinets": channel()}).process(landed.inbound_id)
    assert (again.messages, again.records, again.events) == (10, 0, 0)
    assert count(db, records) == 9
