"""``write_records``' bulk path (driver-level inserts) on both backends: ids, timestamps, drafts, mixed types."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
from sqlalchemy import select

from bridge.db.tables import events, records
from mappings.base import EventDraft
from mappings.canonical import InventoryMovement, Item
from outbox.writer import Origin, write_records


def movement(n: int, qty: str = "1") -> InventoryMovement:
    return InventoryMovement(
        movement_id=f"m{n}", movement_type="issue", occurred_at=datetime(2026, 3, 1, 8, n, tzinfo=UTC),
        item=f"ERP-{n}", source_item=f"ITM{n}", quantity=Decimal(qty), quantity_delta=-Decimal(qty), unit="EA",
        department="ICU", cost_center="CC-ICU", source_channel="cabinets")


def item(code: str) -> Item:
    return Item(item_code=code, description="Gauze", unit="BX", status="active", source_channel="items")


def test_mixed_batch_links_each_event_to_its_record(db):
    origin = Origin("cabinets", None, 0, "f.csv", "corr-1")
    batch = [(movement(1), origin), (item("ITM1"), origin), (movement(2), origin), (item("ITM2"), origin)]
    draft = EventDraft("file.ack.created", "ack", "f.csv", {"filename": "f.ack", "content": "ok"})
    with db.write() as conn:
        res = write_records(db, conn, batch, drafts=[(draft, Origin("cabinets", None, None, "f.csv", "corr-1"))])
    assert (res.inserted, res.updated, res.unchanged, res.events) == (4, 0, 0, 5)
    with db.read() as conn:
        recs = {r.id: r for r in conn.execute(select(records))}
        evs = conn.execute(select(events).order_by(events.c.seq)).all()
    assert [e.event_type for e in evs] == ["inventory.movement.recorded", "item.master.recorded"] * 2 + [
        "file.ack.created"]
    for e in evs[:4]:
        rec = recs[e.record_id]
        payload = orjson.loads(e.payload)
        assert payload["natural_key"] == rec.natural_key and payload["record_id"] == rec.id
        assert payload["record"] == orjson.loads(rec.data)
        assert payload["id"] == e.id and len(e.id) == 36 and e.id[14] == "7"  # UUID version 7
        assert e.created_at.tzinfo is not None and e.created_at == rec.created_at
        assert payload["created_at"] == e.created_at.isoformat()
        assert payload["correlation_id"] == "corr-1"
    assert evs[4].record_id is None and orjson.loads(evs[4].payload)["data"]["filename"] == "f.ack"
    stamps = [e.id[:13] for e in evs]  # the 48-bit millisecond prefix of a UUIDv7
    assert stamps == sorted(stamps)


def test_replay_is_unchanged_and_a_change_is_one_update(db):
    origin = Origin("cabinets", None, 0, "f.csv", None)
    with db.write() as conn:
        write_records(db, conn, [(movement(1), origin), (movement(2), origin)])
    with db.write() as conn:
        res = write_records(db, conn, [(movement(1), origin), (movement(2, qty="3"), origin)])
    assert (res.inserted, res.updated, res.unchanged, res.events) == (0, 1, 1, 1)
    with db.read() as conn:
        rows = conn.execute(select(records.c.natural_key, records.c.version).order_by(records.c.id)).all()
        types = conn.execute(select(events.c.event_type).order_by(events.c.seq)).scalars().all()
    assert [tuple(r) for r in rows] == [("m1", 1), ("m2", 2)]
    assert types == ["inventory.movement.recorded"] * 2 + ["inventory.movement.updated"]
