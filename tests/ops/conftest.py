"""Fixtures for the operator tests: settings with one CSV channel, an app, keys, and files through the pipeline.

Rows are synthetic: item and department codes, encounter ids like ``V0000001``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge import ops
from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.pipeline.land import land
from bridge.settings import Settings
from mappings.crosswalks import upsert_entries

CHANNEL = "cabinets"
HEADER = "timestamp,item,quantity,unit,department,transaction_type,encounter\n"


def rows(items: list[str], *, start: int = 0, dept: str = "ICU") -> bytes:
    """One synthetic issue row per item code, each distinct."""
    out = [HEADER]
    for i, item in enumerate(items, start=start):
        out.append(f"2026-11-26 08:{(i // 60) % 60:02d}:{i % 60:02d},{item},1,EA,{dept},issue,V{i:07d}\n")
    return "".join(out).encode()


def make_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.model_validate({
        "database_url": db_url, "data_dir": str(tmp_path / "var"),
        "channels": {CHANNEL: {"source": {"type": "folder", "path": str(tmp_path / "drop")},
                               "parser": {"type": "csv"}, "mapping": {"type": "inventory_movement_csv"}}},
    })


def seed(db: Database) -> None:
    with db.write() as conn:
        upsert_entries(conn, "item", [{"source_code": "100234", "target_code": "ERP-SUT-0001"}])
        upsert_entries(conn, "department", [{"source_code": "ICU", "target_code": "CC-4100"}])


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def ctx(db: Database, settings: Settings) -> ops.OpsContext:
    seed(db)
    return ops.OpsContext.from_settings(settings, db)


@pytest.fixture
def ingest(ctx: ops.OpsContext) -> Callable[..., Any]:
    def _ingest(data: bytes, name: str = "export.csv", origin: str = "") -> Any:
        landed = land(ctx.db, ctx.archive, channel=CHANNEL, src=io.BytesIO(data), name=name, origin=origin)
        return ctx.processor().process(landed.inbound_id)

    return _ingest


@pytest.fixture
def api(db: Database, settings: Settings, ctx: ops.OpsContext) -> Iterator[TestClient]:
    app = create_app(settings, db)
    app.state.ops = ctx
    with TestClient(app) as client:
        yield client


@pytest.fixture
def keys(db: Database) -> dict[str, str]:
    return {
        "reader": create_client(db, "reader", ["ops:read"])[1],
        "writer": create_client(db, "writer", ["ops:read", "ops:write"])[1],
        "phi": create_client(db, "phi", ["ops:*", "phi:read"])[1],
    }


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}
