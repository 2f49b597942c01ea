"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, an archive, settings.

``db`` is parametrized over both backends, so every storage test runs on
each. PostgreSQL is 127.0.0.1:5432 (database ``test``, trust auth) unless
``BRIDGE_TEST_PG`` names another URL; each test gets its own fresh schema
(``search_path``), migrated by the real Alembic migrations. When PostgreSQL
is down the PostgreSQL half is skipped loudly, except in CI (``CI=true``),
where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bridge.db import Database
from bridge.pipeline.land import Archive

PG_URL = os.environ.get("BRIDGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_state: dict[str, object] = {}


def pg_available() -> bool:
    if "ok" not in _pg_state:
        try:
            eng = create_engine(PG_URL)
            with eng.connect() as conn:
                conn.execute(text("select 1"))
            eng.dispose()
            _pg_state["ok"] = True
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            _pg_state["ok"] = False
            _pg_state["why"] = str(exc).splitlines()[0]
    return bool(_pg_state["ok"])


def require_pg() -> None:
    if not pg_available():
        msg = f"PostgreSQL not reachable at {PG_URL}: {_pg_state.get('why')}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def make_pg_url() -> tuple[str, str]:
    """A fresh schema on the test PostgreSQL; returns (url, schema)."""
    require_pg()
    schema = "t_" + uuid.uuid4().hex[:12]
    eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema


def drop_pg_schema(schema: str) -> None:
    eng = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, migrated database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bridge.db'}"
        Database(url).upgrade()
        yield url
    else:
        url, schema = make_pg_url()
        d = Database(url)
        d.upgrade()
        d.dispose()
        try:
            yield url
        finally:
            drop_pg_schema(schema)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url)
    try:
        yield d
    finally:
        d.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    d = Database(f"sqlite:///{tmp_path / 'bridge.db'}")
    d.upgrade()
    try:
        yield d
    finally:
        d.dispose()


@pytest.fixture
def pg_db() -> Iterator[Database]:
    url, schema = make_pg_url()
    d = Database(url)
    d.upgrade()
    try:
        yield d
    finally:
        d.dispose()
        drop_pg_schema(schema)


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "archive")


SAMPLES = Path(__file__).parent / "samples"
