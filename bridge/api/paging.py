"""What the listing routes share: one-statement reads, keyset pages, and JSON built once with orjson.

**Keyset pages** (:func:`keyset_page`): a listing is ordered by an integer key
(``records.id``, ``failures.id``, ``inbound_files.id``), the client passes back
the opaque cursor of the last row it saw, and the next page is ``key > cursor``
(or ``<`` for newest-first listings) with ``LIMIT size + 1``: a page costs one
index range scan at any depth, and the extra row says whether there is more.
The busiest listings (records by type, and the event feed) build their
statements once and read them by the driver (:func:`keyset_rows`,
:meth:`Database.fetch_rows`): SQLAlchemy's statement building, execution and
row processing cost about a quarter of such a page's CPU. Their routes are
``async``: on PostgreSQL the API's :class:`~bridge.db.async_reads.AsyncReader`
(opened in the app's lifespan) reads from the event loop, with no hop to a
worker thread (:func:`fetch_rows`).

**One-statement reads** (:func:`read_all`): a page is one ``SELECT``, and
one statement sees one snapshot by itself. On PostgreSQL it runs in
autocommit, so the page costs one round trip instead of three (``BEGIN``,
``SELECT``, ``COMMIT``). SQLite's ``BEGIN`` costs no round trip, and its
dialect's isolation-level switch would undo the engine's own ``BEGIN``
handling (:mod:`bridge.db.engine`), so there it is :meth:`Database.read`.
Such a read changes nothing, so when it fails because the server dropped the
connection (a PostgreSQL restart; SQLAlchemy then replaces the pooled
connections) it is sent again, once, on a new connection: that is what lets
the API's workers skip the ``SELECT 1`` round trip before every page
(``pre_ping=False``, :mod:`bridge.api.server`).

**Responses** (:func:`json_response`) are serialised here with orjson and
returned as a ``Response``: FastAPI does not validate them a second time
(``response_model`` still documents them). Stored JSON text is parsed before
it is returned (:func:`stored_object`), so a corrupt row is a generic 500 and
never a malformed 200; a row that needs no change is then spliced back as its
original text (``orjson.Fragment``) instead of being serialised again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import Request, Response
from sqlalchemy import ColumnElement, Executable, Row, Select, exc
from starlette.concurrency import run_in_threadpool

from bridge.api.deps import decode_cursor, encode_cursor
from bridge.db import Database
from bridge.errors import StorageError

__all__ = ["fetch_rows", "json_field", "json_response", "keyset_page", "keyset_rows", "matching", "read_all", "stored_object"]

log = logging.getLogger(__name__)


def read_all(db: Database, query: Executable) -> Sequence[Row[Any]]:
    """The rows of the single statement ``query`` (see the module docstring)."""
    if not db.is_postgres:
        with db.read() as conn:
            return conn.execute(query).all()
    try:
        try:
            return _autocommit_read(db, query)
        except exc.DBAPIError as e:
            if not e.connection_invalidated:
                raise
            log.warning("database connection was dropped; reading again on a new one")
            return _autocommit_read(db, query)
    except exc.DBAPIError as e:
        reason = str(e.orig if e.orig is not None else e).splitlines()[0]
        raise StorageError(f"database read failed: {reason}") from e


def _autocommit_read(db: Database, query: Executable) -> Sequence[Row[Any]]:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(query).all()


def matching(query: Select[Any], equal: Mapping[ColumnElement[Any], Any]) -> Select[Any]:
    """``query`` keeping rows where each column equals its value; a None value is no filter."""
    return query.where(*(column == value for column, value in equal.items() if value is not None))


def json_field(db: Database, field: str) -> str:
    """SQL text reading the top-level ``field`` of the JSON ``data`` column as text, on either dialect."""
    return f"(data::json ->> '{field}')" if db.is_postgres else f"json_extract(data, '$.{field}')"


def keyset_page(db: Database, query: Select[Any], key: ColumnElement[int], *, kind: str, after: str | None,
                size: int, newest_first: bool = False) -> tuple[Sequence[Row[Any]], str | None]:
    """One page of ``query`` ordered by ``key``, and the cursor of the next page (None on the last).

    ``after`` is a cursor of ``kind`` from a previous page (a 422 naming ``after`` if it is not).
    """
    last = decode_cursor(kind, after)
    if last is not None:
        query = query.where(key < last if newest_first else key > last)
    query = query.order_by(key.desc() if newest_first else key).limit(size + 1)
    rows = read_all(db, query)
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    return rows, encode_cursor(kind, rows[-1]._mapping[key])


async def fetch_rows(request: Request, statement: Select[Any], params: dict[str, Any]) -> Sequence[Sequence[Any]]:
    """:meth:`Database.fetch_rows` for an ``async`` route: by the app's AsyncReader when it has one (PostgreSQL,
    inside the lifespan); on SQLite right here, on the loop; else on a worker thread.

    A SQLite page is CPU work in this process (WAL readers wait for no writer), like encoding the page
    afterwards: a worker thread only added a hand-off and GIL contention. ``bench/api.py`` (1,000,000
    records, 16 connections paced at 500 requests/s): on threads 3.1 ms of CPU per page and 349
    requests/s reached, p99 111 ms; on the loop 1.4 ms, 500 requests/s, p99 20 ms."""
    reader = request.app.state.reader
    if reader is not None:
        return await reader.fetch_rows(statement, params)
    db: Database = request.app.state.db
    if db.is_sqlite:
        return db.fetch_rows(statement, params)
    return await run_in_threadpool(db.fetch_rows, statement, params)


async def keyset_rows(request: Request, statement: Select[Any], params: dict[str, Any], *, kind: str,
                      after: str | None, size: int) -> tuple[Sequence[Sequence[Any]], str | None]:
    """:func:`keyset_page` for a constant ``statement`` read by :func:`fetch_rows` (the hot pages).

    ``statement`` selects the integer key first, keeps rows with the key above ``:after`` in key order and
    stops at ``:size`` rows; ``params`` binds its other parameters.
    """
    last = decode_cursor(kind, after)
    rows = await fetch_rows(request, statement, {**params, "after": last or 0, "size": size + 1})
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    return rows, encode_cursor(kind, rows[-1][0])


def stored_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object stored as ``text``; a TypeError naming ``what`` if it is not one (a generic 500)."""
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise TypeError(f"{what}: stored JSON is not an object")
    return value


def json_response(content: Any) -> Response:
    """``content`` as JSON (UTC as ``Z``, as pydantic writes it), bypassing FastAPI's response validation."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")
