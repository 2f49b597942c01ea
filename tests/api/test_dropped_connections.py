"""The API's workers after PostgreSQL drops their connections (what a server restart does to a client).

A worker builds its database without a test round trip per checkout
(``pre_ping=False``, :mod:`bridge.api.server`); a read on a connection the
server has closed is sent again on a new one, and the pool is renewed, so a
client sees its pages as before, not an error.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bridge.api.app import create_app
from bridge.db import Database
from bridge.settings import Settings
from tests.api.conftest import auth, csv_rows


@pytest.fixture
def db(pg_db: Database) -> Database:
    """Only PostgreSQL: SQLite has no server to drop a connection."""
    return pg_db


def _drop_sessions(admin: Database, application_name: str) -> int:
    """End every PostgreSQL session of ``application_name`` from the server side; how many there were."""
    with admin.read() as conn:
        return len(conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE application_name = :name"), {"name": application_name}).all())


def test_pages_are_served_after_postgresql_drops_every_connection(db: Database, settings: Settings,
                                                                  keys: dict[str, str],
                                                                  ingest: Callable[..., Any]) -> None:
    ingest(csv_rows(3))
    name = f"bridge-api-{uuid.uuid4().hex[:8]}"
    worker_db = Database(f"{db.url}&application_name={name}", pre_ping=False)  # as an API worker builds it
    key = auth(keys["reader"])
    paths = ["/v1/records/inventory-movements", "/v1/events", "/v1/inbound"]
    try:
        with TestClient(create_app(settings, worker_db)) as api:
            before = {p: api.get(p, headers=key).json()["items"] for p in paths}
            assert all(before.values())
            for path in paths:
                assert _drop_sessions(db, name) >= 1
                again = api.get(path, headers=key)
                assert again.status_code == 200, again.text
                assert again.json()["items"] == before[path]
            record = before["/v1/records/inventory-movements"][0]
            assert _drop_sessions(db, name) >= 1
            one = api.get(f"/v1/records/inventory-movements/{record['id']}", headers=key)
            assert one.status_code == 200 and one.json() == record
    finally:
        worker_db.dispose()


def test_an_unreachable_database_fails_a_page_read_within_the_pool_timeout(db: Database) -> None:
    import asyncio
    import socket
    import time

    from bridge.api.routes.events import PAGE
    from bridge.db.async_reads import AsyncReader
    from bridge.errors import StorageError

    with socket.socket() as unused:  # a loopback port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    down = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", pre_ping=False)

    async def read() -> None:
        reader = AsyncReader(down, timeout=0.5)
        await reader.open()
        try:
            await reader.fetch_rows(PAGE, {"after": 0, "size": 10})
        finally:
            await reader.close()

    started = time.monotonic()
    with pytest.raises(StorageError, match=r"no connection within 0.5 s \(is the database up\?\)"):
        asyncio.run(read())
    assert time.monotonic() - started < 5  # an answer (a 503), not a client left waiting
    down.dispose()
