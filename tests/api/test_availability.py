"""``/v1/items/{id}/availability``: on hand per location from movements; shipped quantities beside it."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from bridge.db import Database
from mappings.canonical import Shipment, ShipmentLine
from outbox.writer import Origin, write_records
from tests.api.conftest import HEADER, assert_problem, auth, csv_rows


def test_on_hand_per_location_and_in_transit(api: TestClient, db: Database, keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(3))  # ICU issues 1, 2, 3 of item 100234
    ingest(csv_rows(2, start=10, dept="ED") + b"2026-11-26 11:00:00,100234,5,EA,ED,return,\n", "b.csv")
    ingest(HEADER.encode() + b"2026-11-26 12:00:00,100235,4,EA,ICU,issue,\n", "c.csv")
    with db.write() as conn:
        write_records(db, conn, [(Shipment(shipment_id="ASN1", vendor="V-MED", shipped_at=date(2026, 11, 25),
                                           lines=[ShipmentLine(item="ERP-SUT-0001", quantity=100),
                                                  ShipmentLine(item="ERP-GLV-0007", quantity=7)]), Origin())])
    h = auth(keys["reader"])
    body = api.get("/v1/items/ERP-SUT-0001/availability", headers=h).json()
    assert body["item"] == "ERP-SUT-0001" and body["source_items"] == ["100234"]
    locs = {x["location"]: x for x in body["locations"]}
    assert set(locs) == {"CC-4100", "CC-4200"}
    assert locs["CC-4100"]["on_hand"] == "-6" and locs["CC-4100"]["movements"] == 3
    # ED: issues of 2 and 3 (rows 10 and 11), then a return of 5
    assert locs["CC-4200"]["on_hand"] == "0" and locs["CC-4200"]["units"] == ["EA"]
    assert body["total_on_hand"] == "-6" and body["in_transit"] == "100"
    # the source code resolves through the item crosswalk
    assert api.get("/v1/items/100234/availability", headers=h).json()["total_on_hand"] == "-6"
    other = api.get("/v1/items/ERP-GLV-0007/availability", headers=h).json()
    assert other["total_on_hand"] == "-4" and other["in_transit"] == "7"


def test_unknown_item_is_404_and_needs_records_read(api: TestClient, keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(1))
    assert_problem(api.get("/v1/items/NOPE/availability", headers=auth(keys["reader"])), 404)
    assert_problem(api.get("/v1/items/ERP-SUT-0001/availability", headers=auth(keys["events_only"])), 403)
    # known to the crosswalk but never moved: zero, not 404
    body = api.get("/v1/items/ERP-GLV-0007/availability", headers=auth(keys["reader"])).json()
    assert body["total_on_hand"] == "0" and body["locations"] == []
