"""Fixtures for the API tests: an app over the ``db`` fixture, keys per scope set, and data made by the pipeline.

Data comes through the real path (land -> Processor with a CSV channel), so
the API is tested against what the pipeline writes. Rows are synthetic: item
and department codes from the seeded crosswalks, encounter ids like ``V0000001``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig, Settings
from mappings.crosswalks import upsert_entries

CHANNEL = "cabinets"
HEADER = "timestamp,item,quantity,unit,department,transaction_type,encounter\n"

#: client name -> scopes; each test gets a key per entry
SCOPE_SETS: dict[str, list[str]] = {
    "reader": ["records:read", "events:read", "ops:read"],
    "phi": ["records:read", "events:read", "phi:read"],
    "records_only": ["records:read"],
    "events_only": ["events:read"],
    "ops_star": ["ops:*"],
    "admin": ["admin"],
    "charges": ["charges:write"],
}


def csv_rows(n: int, *, start: int = 0, item: str = "100234", dept: str = "ICU") -> bytes:
    """``n`` synthetic issue rows, each distinct (seconds advance), each with an encounter id."""
    lines = [HEADER]
    for i in range(start, start + n):
        lines.append(f"2026-11-26 {8 + i // 3600:02d}:{(i // 60) % 60:02d}:{i % 60:02d},{item},{1 + i % 3},EA,"
                     f"{dept},issue,V{i:07d}\n")
    return "".join(lines).encode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"data_dir": str(tmp_path / "var")})


@pytest.fixture
def api(db: Database, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db)) as client:
        yield client


@pytest.fixture
def keys(db: Database) -> dict[str, str]:
    return {name: create_client(db, name, scopes)[1] for name, scopes in SCOPE_SETS.items()}


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
def ingest(db: Database, tmp_path: Path) -> Callable[[bytes, str], Any]:
    """Land ``data`` as a file on the CSV channel and process it; returns the ProcessResult."""
    with db.write() as conn:
        upsert_entries(conn, "item", [{"source_code": "100234", "target_code": "ERP-SUT-0001"},
                                      {"source_code": "100235", "target_code": "ERP-GLV-0007"}])
        upsert_entries(conn, "department", [{"source_code": "ICU", "target_code": "CC-4100"},
                                            {"source_code": "ED", "target_code": "CC-4200"}])
    archive = Archive(tmp_path / "archive")
    config = ChannelConfig.model_validate({
        "source": {"type": "folder", "path": str(tmp_path / "drop")},
        "parser": {"type": "csv"},
        "mapping": {"type": "inventory_movement_csv"},
    })
    processor = Processor(db, archive, {CHANNEL: build_channel(CHANNEL, config)})

    def _ingest(data: bytes, name: str = "export.csv") -> Any:
        landed = land(db, archive, channel=CHANNEL, src=io.BytesIO(data), name=name)
        return processor.process(landed.inbound_id)

    return _ingest


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status``; returns its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    assert body["type"].startswith("urn:bridge:problem:")
    assert body["instance"] == resp.request.url.path
    return body
