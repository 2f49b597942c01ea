"""The API's hot page reads on PostgreSQL, from the event loop: psycopg's async driver on a pool of its own.

A page read through the thread pool (a plain ``def`` route, or
``run_in_threadpool``) paid a hand-off to a worker thread and back for a
statement that takes a fraction of a millisecond, and the worker threads of
concurrent requests then contended for the GIL: about a fifth of the server's
CPU per page, and the tail of its latency (``bench/api.py``). An
:class:`AsyncReader` runs the same constant statements (compiled once by
:meth:`Database.compiled`) on ``psycopg.AsyncConnection`` s in autocommit, so a
route awaits its rows and the loop serves other requests meanwhile.

The reader belongs to one event loop: the API opens it in its lifespan and
closes it at shutdown. Sessions run in UTC, as the engine's do. A connection
the server dropped (a restart) is found broken on first use; the read is sent
once more on another connection and the pool replaces the broken ones.
Everything else (writes, SQLite, pages without a reader) stays on the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Select
from sqlalchemy.engine import make_url

from bridge.db.engine import Database
from bridge.errors import StorageError

__all__ = ["AsyncReader"]

log = logging.getLogger(__name__)


class AsyncReader:
    """Constant SELECTs run by psycopg's async driver on ``size`` pooled connections (PostgreSQL only)."""

    def __init__(self, db: Database, *, size: int = 10, timeout: float = 5.0) -> None:
        if not db.is_postgres:
            raise ValueError("AsyncReader reads PostgreSQL only")
        self.db = db
        cargs, cparams = db.engine.dialect.create_connect_args(make_url(db.url))
        if cargs:
            raise ValueError("unexpected positional connect arguments for psycopg")
        self._pool = AsyncConnectionPool(
            kwargs={**cparams, "autocommit": True}, min_size=1, max_size=size, timeout=timeout,
            configure=_utc, open=False, name="bridge-api-reads")

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def fetch_rows(self, statement: Select[Any], params: Mapping[str, Any]) -> list[Any]:
        """The rows of ``statement`` (as :meth:`Database.fetch_rows`), read once more if the server dropped
        the connection."""
        compiled = self.db.compiled(statement)
        sql, values = compiled.string, compiled.construct_params(params)
        try:
            try:
                return await self._read(sql, values)
            except (PoolTimeout, psycopg.errors.QueryCanceled):
                raise  # OperationalErrors too, but not a dropped connection
            except psycopg.OperationalError:
                # the connection went away (a server restart drops every one): the pool discards a broken
                # connection when it comes back; check the idle ones too, then read once more
                log.warning("database connection was dropped; reading again on a new one")
                await self._pool.check()
                return await self._read(sql, values)
        except PoolTimeout as e:  # no connection came: the server is down, or the pool is busy
            raise StorageError(f"database read failed: no connection within {self._pool.timeout:g} s "
                               "(is the database up?)") from e
        except psycopg.Error as e:
            raise StorageError(f"database read failed: {_first_line(e)}") from e

    async def _read(self, sql: str, values: Mapping[str, Any] | None) -> list[Any]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, values)
            return await cur.fetchall()


async def _utc(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
