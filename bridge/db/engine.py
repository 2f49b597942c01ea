"""The engine, transactions and migrations: the one boundary between bridge and SQL.

SQLite (the embedded default) runs in WAL mode with a busy timeout. Its
writers start with ``BEGIN IMMEDIATE`` so two writers queue on the lock
instead of deadlocking when a read transaction upgrades (SQLAlchemy ignores
``with_for_update()`` on SQLite, see FIELD-NOTES). Readers use a plain
deferred ``BEGIN`` and never block the writer.

PostgreSQL is used by URL (``postgresql+psycopg://``). Writers that insert
outbox events take an advisory transaction lock first (:meth:`Database.lock_events`)
so event ``seq`` order equals commit order. Its sessions run in UTC, and the
API's hot pages are read by the driver (:meth:`Database.fetch_rows`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import Compiled

from bridge.errors import StorageError

__all__ = ["Database", "like_escape", "utcnow"]

log = logging.getLogger(__name__)

#: advisory lock key serialising outbox inserts on PostgreSQL ("bridge" in ASCII)
EVENTS_LOCK_KEY = 0x627269646765


def utcnow() -> datetime:
    return datetime.now(UTC)


def like_escape(value: str) -> str:
    """``value`` with the LIKE wildcards (and the escape character itself) escaped, for a
    pattern used with ``ESCAPE '\\'``."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and pick the psycopg 3 driver for it."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """One database: an engine plus read and write transactions."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, pre_ping: bool = True) -> None:
        """``pre_ping``: test each PostgreSQL connection with a round trip when it leaves the pool, so a
        connection the server dropped (a restart) is replaced before use. Without it (the API's worker
        processes, whose page reads retry once instead: :func:`bridge.api.paging.read_all`) the first
        statement on a dropped connection fails, and SQLAlchemy then replaces every pooled connection."""
        self.url = normalise_url(url)
        self.pool_size = pool_size
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping)
        self.engine: Engine = create_engine(self.url, **kwargs)
        self._compiled: dict[Select[Any], Compiled] = {}  # fetch_rows: few statements, each compiled once
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine)
        elif self.dialect == "postgresql":
            _utc_sessions(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on exit, rolled back on error."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(bridge_immediate=True)
                with conn.begin():
                    yield conn
        except exc.IntegrityError:
            raise
        except exc.DBAPIError as e:
            raise StorageError(f"database write failed: {_short(e)}") from e

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot on both backends)."""
        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn
        except exc.DBAPIError as e:
            raise StorageError(f"database read failed: {_short(e)}") from e

    def fetch_rows(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The rows of ``statement``, a SELECT built once (a module constant, with ``bindparam`` for every
        value that varies), with ``params`` for its bind parameters: the API's hot pages.

        On PostgreSQL the statement is compiled once per statement object and run by the driver in
        autocommit: one round trip, one snapshot (it is one statement), and no SQLAlchemy execution or row
        processing, which cost more CPU than the driver itself. The values come back as the driver makes
        them; timestamps are UTC datetimes since sessions run in UTC (:func:`_utc_sessions`). Parameters go
        to the driver as given (no type's bind processing, no expanding ``IN``). A read changes nothing, so
        when the server has dropped the connection (a restart) the pool is renewed and the read sent once
        more. On SQLite it is an ordinary read.
        """
        if not self.is_postgres:
            with self.read() as conn:
                return conn.execute(statement, params).all()
        compiled = self.compiled(statement)
        sql, values = compiled.string, compiled.construct_params(params)
        try:
            rows = self._driver_read(sql, values)
            if rows is None:
                log.warning("database connection was dropped; reading again on a new one")
                rows = self._driver_read(sql, values)
        except (exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error) as e:
            reason = str(getattr(e, "orig", None) or e).splitlines()[0]
            raise StorageError(f"database read failed: {reason}") from e
        if rows is None:
            raise StorageError("database read failed: the connection was dropped twice")
        return rows

    def compiled(self, statement: Select[Any]) -> Compiled:
        """``statement`` compiled for this database, once per statement object (constant statements only)."""
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = statement.compile(dialect=self.engine.dialect)
        return compiled

    def _driver_read(self, sql: str, params: Mapping[str, Any] | None) -> list[Any] | None:
        """``sql`` run by the driver on a pooled connection in autocommit; None if the server had dropped it."""
        fairy = self.engine.raw_connection()
        conn: Any = fairy.driver_connection
        try:
            conn.autocommit = True
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                if not conn.broken:
                    conn.autocommit = False  # back as SQLAlchemy expects it: transactions begin implicitly
        except self.engine.dialect.loaded_dbapi.Error:
            if not conn.broken:
                raise
            fairy.invalidate()
            self.engine.dispose()  # a restart dropped the others in the pool too: renew them all
            return None
        finally:
            fairy.close()

    def lock_events(self, conn: Connection) -> None:
        """Serialise outbox inserts until this transaction ends (PostgreSQL only).

        Call it right before inserting events, as late in the transaction as
        possible: every transaction that inserts events then commits in ``seq``
        order, so a feed reader paging by ``seq`` never skips a late commit.
        SQLite needs nothing: it has a single writer.
        """
        if self.is_postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENTS_LOCK_KEY})

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision``."""
        from alembic import command

        command.upgrade(alembic_config(self.url), revision)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    here = Path(__file__).parent / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy emit BEGIN itself, so we can choose IMMEDIATE for writers
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL syncs only at checkpoints, so a commit (a landed
        # file's row, an MLLP message about to be ACKed) could roll back after a power loss or an OS
        # crash while its sender has already deleted the file or been told AA. FULL syncs the WAL at
        # each commit: one fsync per transaction (measured: batch ingest 5,210 msg/s, MLLP groups
        # unchanged within the machine's noise)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        # a 1,000-message batch touches a few MB of pages: keep them in cache until commit;
        # 16 MB, not more: the cache is per connection and counts in the process's RSS
        cur.execute("PRAGMA cache_size=-16384")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get("bridge_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _utc_sessions(engine: Engine) -> None:
    """Run every PostgreSQL session in UTC: timestamps then come back with ``datetime.UTC`` as their tzinfo,
    which :class:`bridge.db.tables.UtcDateTime` passes through without a conversion per value."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("SET TIME ZONE 'UTC'")
        dbapi_conn.commit()


def _short(e: exc.DBAPIError) -> str:
    return str(e.orig).splitlines()[0] if e.orig is not None else str(e).splitlines()[0]
