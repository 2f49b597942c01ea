"""What the listing routes share: one-statement reads, keyset pages, and JSON built once with orjson.

**Keyset pages** (:func:`keyset_page`): a listing is ordered by an integer key
(``records.id``, ``failures.id``, ``inbound_files.id``), the client passes back
the opaque cursor of the last row it saw, and the next page is ``key > cursor``
(or ``<`` for newest-first listings) with ``LIMIT size + 1``: a page costs one
index range scan at any depth, and the extra row says whether there is more.

**One-statement reads** (:func:`statement_read`): a page is one ``SELECT``, and
one statement sees one snapshot by itself. On PostgreSQL it runs in
autocommit, so the page costs one round trip instead of three (``BEGIN``,
``SELECT``, ``COMMIT``). SQLite's ``BEGIN`` costs no round trip, and its
dialect's isolation-level switch would undo the engine's own ``BEGIN``
handling (:mod:`bridge.db.engine`), so there it is :meth:`Database.read`.

**Responses** (:func:`json_response`) are serialised here with orjson and
returned as a ``Response``: FastAPI does not validate them a second time
(``response_model`` still documents them). Stored JSON text is parsed before
it is returned (:func:`stored_object`), so a corrupt row is a generic 500 and
never a malformed 200; a row that needs no change is then spliced back as its
original text (``orjson.Fragment``) instead of being serialised again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from fastapi import Response
from sqlalchemy import ColumnElement, Connection, Row, Select, exc

from bridge.api.deps import decode_cursor, encode_cursor
from bridge.db import Database
from bridge.errors import StorageError

__all__ = ["json_field", "json_response", "keyset_page", "matching", "statement_read", "stored_object"]


@contextmanager
def statement_read(db: Database) -> Iterator[Connection]:
    """A connection for a read that is a single statement (see the module docstring)."""
    if not db.is_postgres:
        with db.read() as conn:
            yield conn
        return
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
    except exc.DBAPIError as e:
        reason = str(e.orig if e.orig is not None else e).splitlines()[0]
        raise StorageError(f"database read failed: {reason}") from e


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
    with statement_read(db) as conn:
        rows = conn.execute(query).all()
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    return rows, encode_cursor(kind, rows[-1]._mapping[key])


def stored_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object stored as ``text``; a TypeError naming ``what`` if it is not one (a generic 500)."""
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise TypeError(f"{what}: stored JSON is not an object")
    return value


def json_response(content: Any) -> Response:
    """``content`` as JSON (UTC as ``Z``, as pydantic writes it), bypassing FastAPI's response validation."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")
