"""``GET /v1/items/{id}/availability``: on-hand per location from inventory movements, plus shipped quantities.

On hand is the sum of ``quantity_delta`` of the item's ``inventory_movement``
records (issues and waste negative; returns, receipts and adjustments as
signed), per stocking location: the movement's ``location``, or its cost
center when the source names no location, which is the same key the movement
events are ordered by. Sums are exact decimals. ``in_transit`` adds what
vendors reported shipped (``shipment`` records from 856 ASNs) for the item:
shipped is not received, so it is reported beside on hand, never in it.

``id`` is the ERP item number; a source item code (the ``item`` crosswalk's
source side) is translated first. An item neither the crosswalk nor any
movement or shipment knows is a 404.

Derived at request time from the records table: one pass over the item's
movements, filtered in SQL on the JSON ``item`` field (``json_extract`` on
SQLite, ``->>`` on PostgreSQL) and summed here. Without an expression index
that pass reads every movement row; a stock table maintained in the commit
would make it constant time, at the cost of a write per movement.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select, text

from bridge.api.deps import DbDep, RecordsReader
from bridge.api.paging import json_field
from bridge.api.problems import Problem, responses
from bridge.db import like_escape, utcnow
from bridge.db.tables import crosswalks

__all__ = ["AvailabilityPublic", "LocationStockPublic", "router"]

router = APIRouter(prefix="/items", tags=["records"])


class LocationStockPublic(BaseModel):
    location: str = Field(description="stocking location, or the cost center when the source names none",
                          examples=["CC-4100"])
    cost_centers: list[str] = Field(description="cost centers the movements were booked to")
    on_hand: Decimal = Field(description="sum of quantity_delta", examples=["42"])
    units: list[str] = Field(examples=[["EA"]])
    movements: int
    last_movement_at: datetime | None = None


class AvailabilityPublic(BaseModel):
    item: str = Field(description="ERP item number", examples=["ERP-SUT-0001"])
    source_items: list[str] = Field(description="source codes the item crosswalk maps to it")
    total_on_hand: Decimal
    in_transit: Decimal = Field(description="shipped by vendors (856 ASN lines), not yet received")
    locations: list[LocationStockPublic]
    as_of: datetime

    model_config = {"json_schema_extra": {"examples": [{
        "item": "ERP-SUT-0001", "source_items": ["100234"], "total_on_hand": "38", "in_transit": "100",
        "locations": [{"location": "CC-4100", "cost_centers": ["CC-4100"], "on_hand": "38", "units": ["EA"],
                       "movements": 12, "last_movement_at": "2026-11-26T08:00:00Z"}],
        "as_of": "2026-11-26T09:00:00Z"}]}}


def _resolve_item(conn: Connection, id_: str) -> tuple[str, list[str], bool]:
    """(ERP item, its source codes, whether the crosswalk knows it)."""
    rows = conn.execute(select(crosswalks.c.source_code, crosswalks.c.target_code)
                        .where(crosswalks.c.kind == "item",
                               (crosswalks.c.target_code == id_) | (crosswalks.c.source_code == id_))).all()
    targets = {r.target_code for r in rows if r.target_code == id_}
    item = id_ if targets or not rows else rows[0].target_code
    sources = sorted(r.source_code for r in conn.execute(
        select(crosswalks.c.source_code).where(crosswalks.c.kind == "item", crosswalks.c.target_code == item)))
    return item, sources, bool(rows)


@router.get("/{id}/availability", response_model=AvailabilityPublic, summary="Item availability per location",
            description="On hand per stocking location, summed from the item's inventory movements, and the "
                        "quantity vendors reported shipped (856). `id` is the ERP item number or a source item "
                        "code. Needs `records:read`.",
            responses=responses(401, 403, 404, 422, 429))
def get_availability(
    id: Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$",
                            description="ERP item number or source item code",
                            examples=["ERP-SUT-0001"])],
    client: RecordsReader,
    db: DbDep,
) -> AvailabilityPublic:
    with db.read() as conn:
        item, sources, known = _resolve_item(conn, id)
        moves = conn.execute(text(f"SELECT data FROM records WHERE type = 'inventory_movement' "
                                  f"AND {json_field(db, 'item')} = :item"), {"item": item}).all()
        # a LIKE prefilter on the JSON text, then an exact check of each line
        needle = like_escape(orjson.dumps(item).decode())
        ships = conn.execute(text("SELECT data FROM records WHERE type = 'shipment' AND data LIKE :p ESCAPE '\\'"),
                             {"p": f"%{needle}%"}).all()
    by_loc: dict[str, dict[str, Any]] = {}
    for (raw,) in moves:
        m = orjson.loads(raw)
        loc = m.get("location") or m.get("cost_center") or "unknown"
        entry = by_loc.setdefault(loc, {"on_hand": Decimal(0), "cost_centers": set(), "units": set(),
                                        "movements": 0, "last": None})
        entry["on_hand"] += Decimal(str(m["quantity_delta"]))
        entry["cost_centers"].add(m.get("cost_center") or "")
        entry["units"].add(m.get("unit") or "")
        entry["movements"] += 1
        at = datetime.fromisoformat(m["occurred_at"])
        entry["last"] = at if entry["last"] is None or at > entry["last"] else entry["last"]
    in_transit = Decimal(0)
    for (raw,) in ships:
        for line in orjson.loads(raw).get("lines", []):
            if line.get("item") == item:
                in_transit += Decimal(str(line["quantity"]))
    if not known and not by_loc and not in_transit:
        raise Problem(404, f"no item {id!r}: the item crosswalk does not know it and no movement or shipment "
                      "names it", slug="not-found", title="Not found")
    locations = [LocationStockPublic(location=loc, cost_centers=sorted(c for c in e["cost_centers"] if c),
                                     on_hand=e["on_hand"], units=sorted(u for u in e["units"] if u),
                                     movements=e["movements"], last_movement_at=e["last"])
                 for loc, e in sorted(by_loc.items())]
    return AvailabilityPublic(item=item, source_items=sources,
                              total_on_hand=sum((x.on_hand for x in locations), Decimal(0)),
                              in_transit=in_transit, locations=locations, as_of=utcnow())
