"""Master-data crosswalks: a source system's code to the ERP's code, by kind.

Kinds in use: ``item`` (source item number -> ERP item), ``department``
(department -> cost center), ``vendor``, ``gl_account``, ``location``. Entries
live in the ``crosswalks`` table, seeded from CSV files named in ``bridge.yaml``
and edited by operators; a missing or inactive entry is a
:class:`~bridge.errors.MasterDataError` naming the kind and the code, so the
message is quarantined as ``master_data`` and reprocessed once it is fixed.

:class:`CrosswalkSnapshot` is what one file (or one group of MLLP messages) is
mapped with: a mapping looks codes up in memory, and a change becomes visible to
the next file (or the next reprocess). The entries of a kind are read once per
process and kept while the crosswalks' version stands: ``crosswalk_state``, one
row that triggers bump on any change to ``crosswalks`` by any path (migration
0006). A snapshot reads that version once, before any entry, so what it keeps is
never older than the version it is filed under; reading whole kinds per file
made every MLLP group of 8 messages read an item master of any size.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path

import orjson
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge.db import Database, utcnow
from bridge.db.tables import crosswalk_state, crosswalks
from bridge.errors import ConfigError, MasterDataError, Position

__all__ = ["CrosswalkSnapshot", "import_csv", "upsert_entries"]


class _Kept:
    """The crosswalk entries one process keeps for a database, by kind, filed under one version."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version: int | None = None
        self.kinds: dict[str, dict[str, tuple[str, bool]]] = {}

    def get(self, version: int, kind: str) -> dict[str, tuple[str, bool]] | None:
        with self.lock:
            return self.kinds.get(kind) if version == self.version else None

    def put(self, version: int, kind: str, table: dict[str, tuple[str, bool]]) -> None:
        with self.lock:
            if self.version is None or version > self.version:
                self.version, self.kinds = version, {}
            if version == self.version:
                self.kinds[kind] = table


_KEPT: weakref.WeakKeyDictionary[Database, _Kept] = weakref.WeakKeyDictionary()
_KEPT_LOCK = threading.Lock()


def _kept(db: Database) -> _Kept:
    with _KEPT_LOCK:
        kept = _KEPT.get(db)
        if kept is None:
            kept = _KEPT[db] = _Kept()
        return kept


class CrosswalkSnapshot:
    """Crosswalk entries as of this snapshot's first use, one kind at a time (see the module doc)."""

    def __init__(self, db: Database, conn: Connection | None = None) -> None:
        """``conn``: read in the caller's open transaction (an MLLP group's write), not in a read of its own.
        That transaction must not change crosswalks itself: what a snapshot reads is kept for the process."""
        self.db = db
        self._conn = conn
        self._kept = _kept(db)
        self._version: int | None = None
        self._kinds: dict[str, dict[str, tuple[str, bool]]] = {}

    def _load(self, kind: str) -> dict[str, tuple[str, bool]]:
        table = self._kinds.get(kind)
        if table is not None:
            return table
        if self._version is not None:
            # the version is this snapshot's already: a kind kept at it needs no read
            table = self._kept.get(self._version, kind)
            if table is not None:
                self._kinds[kind] = table
                return table
        with contextlib.nullcontext(self._conn) if self._conn is not None else self.db.read() as conn:
            if self._version is None:
                self._version = conn.execute(select(crosswalk_state.c.version)).scalar_one()
            table = self._kept.get(self._version, kind)
            if table is None:
                rows = conn.execute(
                    select(crosswalks.c.source_code, crosswalks.c.target_code, crosswalks.c.active).where(
                        crosswalks.c.kind == kind
                    )
                ).all()
                table = {r.source_code: (r.target_code, bool(r.active)) for r in rows}
                self._kept.put(self._version, kind, table)
        self._kinds[kind] = table
        return table

    def find(self, kind: str, code: str) -> str | None:
        hit = self._load(kind).get(code)
        return hit[0] if hit and hit[1] else None

    def lookup(self, kind: str, code: str, *, position: Position, field: str | None = None) -> str:
        hit = self._load(kind).get(code)
        if hit is None:
            raise MasterDataError(f"no {kind} crosswalk entry for code {code!r}", position.with_(field=field),
                                  kind=kind, key=code)
        if not hit[1]:
            raise MasterDataError(f"{kind} crosswalk entry for code {code!r} is inactive",
                                  position.with_(field=field), kind=kind, key=code)
        return hit[0]


def upsert_entries(conn: Connection, kind: str, entries: Iterable[dict[str, object]], *, actor: str | None = None) -> int:
    """Insert or update crosswalk entries (keys: source_code, target_code, description, active, attrs)."""
    rows = []
    now = utcnow()
    for e in entries:
        rows.append({
            "kind": kind,
            "source_code": str(e["source_code"]),
            "target_code": str(e["target_code"]),
            "description": str(e.get("description") or ""),
            "active": bool(e.get("active", True)),
            "attrs": orjson.dumps(e.get("attrs") or {}).decode(),
            "updated_at": now,
            "updated_by": actor,
        })
    if not rows:
        return 0
    dialect = conn.dialect.name
    ins = (postgresql.insert(crosswalks) if dialect == "postgresql" else sqlite.insert(crosswalks))
    stmt = ins.on_conflict_do_update(
        index_elements=["kind", "source_code"],
        set_={c: ins.excluded[c] for c in ("target_code", "description", "active", "attrs", "updated_at", "updated_by")},
    )
    conn.execute(stmt, rows)
    return len(rows)


def deactivate(conn: Connection, kind: str, source_code: str, *, actor: str | None = None) -> bool:
    res = conn.execute(
        update(crosswalks)
        .where(crosswalks.c.kind == kind, crosswalks.c.source_code == source_code)
        .values(active=False, updated_at=utcnow(), updated_by=actor)
    )
    return bool(res.rowcount)


_TRUE = {"1", "true", "yes", "y", "active", "a", ""}


def parse_csv(text: str, *, where: str) -> list[dict[str, object]]:
    """Read ``source_code,target_code[,description][,active]`` rows; errors name file and line."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "source_code" not in header or "target_code" not in header:
        raise ConfigError(where, "crosswalk CSV needs the columns source_code and target_code")
    reader.fieldnames = header
    out: list[dict[str, object]] = []
    for row in reader:
        src = (row.get("source_code") or "").strip()
        tgt = (row.get("target_code") or "").strip()
        if not src or not tgt:
            raise ConfigError(where, f"line {reader.line_num}: source_code and target_code must not be empty")
        active = (row.get("active") or "").strip().lower() in _TRUE
        out.append({"source_code": src, "target_code": tgt,
                    "description": (row.get("description") or "").strip(), "active": active})
    return out


def import_csv(db: Database, kind: str, path: Path, *, actor: str | None = "seed") -> int:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"crosswalks.{kind}.file", f"cannot read {path}: {exc.strerror}") from None
    entries = parse_csv(text, where=f"crosswalks.{kind}.file ({path})")
    with db.write() as conn:
        return upsert_entries(conn, kind, entries, actor=actor)
