"""Helpers for the flat-file pipeline tests: channels, crosswalk seeds, ingest, and readers of what was stored.

Everything reads back through the database (``inbound_files``, ``failures``,
``records``, ``events``), the way an operator or the API sees it.
"""

from __future__ import annotations

import io
from typing import Any

import orjson
from sqlalchemy import func, select

from bridge.db import Database
from bridge.db.tables import events, failures, inbound_files, records
from bridge.pipeline.land import Archive, Landed, land
from bridge.pipeline.process import ChannelRuntime, Processor, ProcessResult, build_channel
from bridge.settings import ChannelConfig, ProcessingConfig
from mappings.crosswalks import upsert_entries

CONSUMPTION_HEADER = "timestamp,item,quantity,unit,department,lot,encounter,transaction_type\n"


def channel(name: str = "cabinets", *, parser: dict[str, Any] | None = None, mapping: dict[str, Any] | None = None,
            all_or_nothing: bool = False) -> ChannelRuntime:
    """A channel built the way ``bridge run`` builds it from ``bridge.yaml``."""
    return build_channel(name, ChannelConfig.model_validate({
        "source": {"type": "folder"},
        "parser": parser or {"type": "csv"},
        "mapping": mapping or {"type": "inventory_movement_csv"},
        "all_or_nothing": all_or_nothing,
    }))


def seed(db: Database, *, items: int = 5, departments: tuple[str, ...] = ("ICU", "OR", "ED")) -> None:
    """Crosswalk entries ITM1..ITMn -> ERP-1..n and each department -> CC-<dept>."""
    with db.write() as conn:
        upsert_entries(conn, "item", [{"source_code": f"ITM{i}", "target_code": f"ERP-{i}"}
                                      for i in range(1, items + 1)])
        upsert_entries(conn, "department", [{"source_code": d, "target_code": f"CC-{d}"} for d in departments])


def add_crosswalk(db: Database, kind: str, source: str, target: str) -> None:
    with db.write() as conn:
        upsert_entries(conn, kind, [{"source_code": source, "target_code": target}])


def consumption(*rows: str, header: str = CONSUMPTION_HEADER) -> bytes:
    return (header + "".join(r + "\n" for r in rows)).encode()


def land_bytes(db: Database, archive: Archive, data: bytes, *, name: str = "export.csv",
               channel_name: str = "cabinets") -> Landed:
    return land(db, archive, channel=channel_name, src=io.BytesIO(data), name=name)


def ingest(db: Database, archive: Archive, data: bytes, *, name: str = "export.csv",
           ch: ChannelRuntime | None = None, batch_size: int = 1000) -> tuple[Landed, ProcessResult | None]:
    """Land ``data`` and process it with a fresh Processor; returns (landed, result)."""
    ch = ch or channel()
    landed = land_bytes(db, archive, data, name=name, channel_name=ch.name)
    proc = Processor(db, archive, {ch.name: ch}, ProcessingConfig(batch_size=batch_size))
    return landed, proc.process(landed.inbound_id)


def inbound(db: Database, inbound_id: int) -> Any:
    with db.read() as conn:
        return conn.execute(select(inbound_files).where(inbound_files.c.id == inbound_id)).one()


def failure_rows(db: Database, inbound_id: int, *, status: str | None = "open") -> list[dict[str, Any]]:
    """The stored failures of a file, by message index, with their position decoded."""
    q = select(failures).where(failures.c.inbound_id == inbound_id).order_by(failures.c.message_index)
    if status is not None:
        q = q.where(failures.c.status == status)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["position"] = orjson.loads(d["position"])
        out.append(d)
    return out


def record_data(db: Database, rtype: str = "inventory_movement") -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(records.c.data).where(records.c.type == rtype).order_by(records.c.id)).scalars()
        return [orjson.loads(r) for r in rows]


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def event_rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(select(events).order_by(events.c.seq)).mappings()]


__all__ = ["CONSUMPTION_HEADER", "add_crosswalk", "channel", "consumption", "count", "event_rows", "failure_rows",
           "inbound", "ingest", "land_bytes", "record_data", "seed", "records", "events"]
