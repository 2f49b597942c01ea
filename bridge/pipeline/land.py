"""Landing: raw bytes into the content-addressed archive, one ``inbound_files`` row committed.

The archive keeps each distinct content once, under ``<root>/<sha[:2]>/<sha[2:4]>/<sha>``;
bytes stream through a temp file in the archive (fsynced, then renamed into
place), so a 200 MB file never sits in memory and a crash leaves no half blob
under a real name.

The same bytes on the same channel land once: the partial unique index on
(channel, sha256) decides, even between two processes racing on one drop. A
re-drop gets its own row with ``status='duplicate'`` pointing at the original,
so the operator sees it arrived, and it is never processed again.

Small units landed together (an MLLP group, a batch of small SFTP files) are
appended to a pack file instead, one write and one fdatasync for the group
(:meth:`Archive.append`); each unit's row keeps its own sha256 and says which
pack and where (``pack``, ``pack_offset``). :meth:`Archive.open_landed` reads
either kind back.

Names from the outside (a dropped file name, an upload's filename) are only
metadata here: nothing builds a path from them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, exc, insert, select

from bridge.db import Database, utcnow
from bridge.db.tables import inbound_files
from bridge.files import fsync_dir

__all__ = ["Archive", "Landed", "Lander", "Unit", "land", "land_many"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class Archive:
    """Content-addressed storage of raw inbound bytes on local disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root = str(self.root)  # the hot path joins strings: pathlib cost more than the rename
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._writers = threading.local()  # each thread's open pack file (:meth:`append`)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def store(self, src: BinaryIO) -> tuple[str, int]:
        """Copy ``src`` into the archive; return (sha256, size)."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="in-")
        try:
            with os.fdopen(fd, "wb") as out:
                sha, size = _copy(src, out)
                out.flush()
                os.fsync(out.fileno())
            self._place(tmp_name, sha)
            return sha, size
        except BaseException:
            _unlink(tmp_name)
            raise

    def store_bytes(self, data: bytes) -> tuple[str, int]:
        return self.store(io.BytesIO(data))

    def append(self, units: Sequence[bytes]) -> tuple[str, list[int]]:
        """Append several small units to this thread's pack file, durably: (the pack's path, each unit's offset).

        An MLLP group (or a batch of small SFTP files) is one write and one
        fdatasync on a file that is already open: no file is created, renamed
        or given a directory per group. (An object per message cost a create,
        an fsync and a rename each: 0.21 ms of CPU per message in a group of 8,
        and the creates waited on the file system's journal.) Each thread
        writes its own pack file, ``packs/<day>/<pid>-<thread>-<random>.pack``,
        so groups committing at once do not queue on one file; a file is
        closed at ``PACK_BYTES`` or when the day changes. Only what a committed
        row points at is ever read, so bytes a crash or a failed write left at
        the end of a pack are never seen, and after a failed write the thread
        starts a new pack rather than append behind them.
        """
        writer = getattr(self._writers, "pack", None)
        day = time.strftime("%Y%m%d", time.gmtime())
        if writer is None or writer.day != day or writer.size >= PACK_BYTES:
            if writer is not None:
                writer.close()
            writer = self._writers.pack = _PackWriter(self.root, day)
        offsets: list[int] = []
        at = writer.size
        for data in units:
            offsets.append(at)
            at += len(data)
        try:
            writer.write(b"".join(units))
        except BaseException:
            self._writers.pack = None
            writer.close()
            raise
        return writer.name, offsets

    def _place(self, tmp_name: str, sha: str) -> None:
        """Rename the fsynced temp file to its address (kept content stays); folders are made on first use."""
        final = os.path.join(self._root, sha[:2], sha[2:4], sha)
        if os.path.exists(final):
            os.unlink(tmp_name)
            return
        folder = os.path.dirname(final)
        try:
            os.replace(tmp_name, final)
        except FileNotFoundError:
            made = _makedirs(folder, self._root)
            os.replace(tmp_name, final)
            for parent in made:
                fsync_dir(parent)
        # the rename is durable once its folder is synced; only then may a row point at it
        fsync_dir(folder)

    def open(self, sha256: str) -> BinaryIO:
        """An archive object by its sha256 (a file landed on its own)."""
        return open(self.path_for(sha256), "rb")

    def open_landed(self, unit: Any) -> BinaryIO:
        """The bytes of a landed unit: an ``inbound_files`` row, or a :class:`Landed`.

        A unit in a pack file (``pack`` set, see :meth:`append`) is read from
        its offset; it is small (an MLLP message, a one-request SFTP file), so
        it comes back in memory. FileNotFoundError when the bytes are gone.
        """
        pack = unit.pack
        if pack is None:
            return self.open(unit.sha256)
        if not _PACK_NAME.fullmatch(pack):
            raise FileNotFoundError(f"not a pack of this archive: {pack!r}")
        with open(os.path.join(self._root, pack), "rb") as fh:
            fh.seek(unit.pack_offset)
            data = fh.read(unit.size)
        if len(data) != unit.size:
            raise FileNotFoundError(f"archive pack {pack} ends before unit {unit.sha256} ({unit.size} bytes at "
                                    f"{unit.pack_offset})")
        return io.BytesIO(data)


#: a pack file is closed (and the next group starts another) once it holds this many bytes
PACK_BYTES = 64 * 1024 * 1024
_PACK_NAME = re.compile(r"packs/[0-9]{8}/[0-9]+-[0-9]+-[0-9a-f]{8}\.pack")


class _PackWriter:
    """One open pack file, appended to by one thread."""

    def __init__(self, root: Path, day: str) -> None:
        self.fd = -1  # until the file is open (close() and __del__ see it)
        self.day = day
        self.name = f"packs/{day}/{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}.pack"
        path = root / self.name
        made = _makedirs(str(path.parent), str(root))
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                          0o600)
        self.size = 0
        # the new file's name (and any folder made for it) is synced once, not at each group's fdatasync
        for folder in [str(path.parent), *made]:
            fsync_dir(folder)

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)
        os.fdatasync(self.fd)
        self.size += len(data)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    __del__ = close  # a thread that ends drops its writer


def _copy(src: BinaryIO, out: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _makedirs(folder: str, root: str) -> list[str]:
    """Make ``folder`` and any missing parents below ``root``; return the parents whose entries changed."""
    missing: list[str] = []
    at = folder
    while at != root and not os.path.isdir(at):
        missing.append(at)
        at = os.path.dirname(at)
    os.makedirs(folder, exist_ok=True)
    return [os.path.dirname(made) for made in missing]


def _unlink(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)


@dataclass(frozen=True, slots=True)
class Landed:
    inbound_id: int
    sha256: str
    size: int
    duplicate_of: int | None
    correlation_id: str
    #: where the bytes are when the unit landed in a pack file (:meth:`Archive.append`)
    pack: str | None = None
    pack_offset: int | None = None
    #: the unit's ``inbound_files`` row, when :func:`land_many` took its processing lease
    row: Any = None

    @property
    def duplicate(self) -> bool:
        return self.duplicate_of is not None


def land(
    db: Database,
    archive: Archive,
    *,
    channel: str,
    src: BinaryIO,
    name: str,
    origin: str = "",
    received_at: datetime | None = None,
    correlation_id: str | None = None,
    parent_id: int | None = None,
) -> Landed:
    """Archive ``src`` and commit its ``inbound_files`` row. Returns what landed.

    A duplicate (same channel, same sha256 as an earlier original) is recorded
    with ``status='duplicate'``; the caller may then acknowledge the source
    exactly as for a new file.
    """
    sha, size = archive.store(src)
    row = _row(channel, name, sha, size, received_at or utcnow(), origin, correlation_id, parent_id)
    correlation_id = row["correlation_id"]
    try:
        with db.write() as conn:
            new_id = conn.execute(insert(inbound_files).returning(inbound_files.c.id), row).scalar_one()
        log.info("landed", extra={"channel": channel, "inbound_id": new_id, "sha256": sha, "size": size})
        return Landed(new_id, sha, size, None, correlation_id)
    except exc.IntegrityError:
        pass
    with db.write() as conn:
        original = _original(conn, channel, sha)
        row.update(status="duplicate", duplicate_of=original)
        dup_id = conn.execute(insert(inbound_files).returning(inbound_files.c.id), row).scalar_one()
    log.info("duplicate", extra={"channel": channel, "inbound_id": dup_id, "duplicate_of": original})
    return Landed(dup_id, sha, size, original, correlation_id)


@dataclass(frozen=True, slots=True)
class Unit:
    """One small unit (an MLLP message) to land together with others through :func:`land_many`."""

    data: bytes
    name: str
    origin: str = ""


def land_many(db: Database, archive: Archive, *, channel: str, units: Sequence[Unit],
              lease: tuple[str, datetime] | None = None, conn: Connection | None = None) -> list[Landed]:
    """Land several units at once: ONE durable write for their bytes, ONE transaction for their rows.

    The bytes of two or more units are appended to a pack file (:meth:`Archive.append`);
    each row keeps its unit's own sha256 and where it is in the pack. The
    duplicate rule is :func:`land`'s: bytes that landed on this channel
    before (or earlier in the same group) get a ``duplicate`` row pointing at
    the original. An original inserted concurrently by another process is
    found through ``ON CONFLICT DO NOTHING`` on the partial unique index, so
    the group's transaction never aborts on it. With ``lease`` (owner, until)
    the new originals are landed already claimed for processing by ``owner``
    (``Landed.row`` is the claimed row), as :meth:`Processor.claim_many` would,
    one transaction less for a caller that processes them at once. With ``conn``
    the rows are written in the caller's transaction (which the caller commits,
    the bytes being durable already). Returns one ``Landed`` per unit, in order;
    nothing is committed if anything fails.
    """
    datas = [u.data for u in units]
    pack: str | None = None
    offsets: list[int | None] = [None] * len(units)
    if len(units) > 1:
        shas = [hashlib.sha256(data).hexdigest() for data in datas]
        pack, packed = archive.append(datas)
        offsets = list(packed)
    else:
        shas = [archive.store_bytes(datas[0])[0]] if datas else []
    now = utcnow()
    rows = []
    for unit, sha, offset in zip(units, shas, offsets, strict=True):
        row = _row(channel, unit.name, sha, len(unit.data), now, unit.origin, None, None)
        row["pack"], row["pack_offset"] = pack if offset is not None else None, offset
        rows.append(row)
    sql = _group_statements(db.is_postgres)
    claimed: dict[str, Any] = {}
    # a caller that commits the group in its own transaction (``conn``) reports its outcome instead
    log_level = logging.DEBUG if conn is not None else logging.INFO
    with contextlib.nullcontext(conn) if conn is not None else db.write() as conn:
        originals = _originals(conn, db.is_postgres, channel, sorted(set(shas)))
        # the first unit with bytes not seen before becomes their original; every other unit a duplicate
        fresh: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["sha256"] not in originals:
                fresh.setdefault(row["sha256"], row)
        new_ids: dict[str, int] = {}
        if fresh:
            params = list(fresh.values())
            if lease is not None:
                params = [{**row, "status": "processing", "claimed_by": lease[0], "claimed_until": lease[1],
                           "attempts": 1} for row in params]
            new_ids = _insert_originals(conn, db.is_postgres, params)
            if lease is not None:
                # the claimed rows as the database now holds them, built from what went in (no read back)
                claimed = {p["sha256"]: LandedRow(**{**_DEFAULTS, **p, "id": new_ids[p["sha256"]]})
                           for p in params if p["sha256"] in new_ids}
            originals.update(new_ids)
            for sha in fresh.keys() - new_ids.keys():
                # another process landed these bytes between the select and the insert
                originals[sha] = _original(conn, channel, sha)
        dups = [row for row in rows if fresh.get(row["sha256"]) is not row or row["sha256"] not in new_ids]
        for row in dups:
            row.update(status="duplicate", duplicate_of=originals[row["sha256"]])
        dup_ids = iter(conn.execute(sql.insert_duplicates, dups).scalars().all() if dups else ())
    landed = []
    for row in rows:
        original = row["status"] != "duplicate"
        landed.append(Landed(new_ids[row["sha256"]] if original else next(dup_ids), row["sha256"], row["size"],
                             row.get("duplicate_of"), row["correlation_id"], row["pack"], row["pack_offset"],
                             claimed[row["sha256"]] if original and lease is not None else None))
    log.log(log_level, "landed group",
            extra={"channel": channel, "units": len(units), "pack": pack,
                   "duplicates": sum(1 for x in landed if x.duplicate)})
    return landed


#: an ``inbound_files`` row as :func:`land_many` landed it, leased (``Landed.row``): every column, by name
LandedRow = collections.namedtuple("LandedRow", [c.name for c in inbound_files.c])  # type: ignore[misc]
#: the columns a landed original leaves to the table's defaults (tests/pipeline hold them to the schema's)
_DEFAULTS: dict[str, Any] = {"duplicate_of": None, "message_count": 0, "record_count": 0, "failure_count": 0,
                             "progress": -1, "attempts": 0, "claimed_by": None, "claimed_until": None,
                             "processed_at": None, "error": None}

# An MLLP group's two landing statements, at driver level: SQLAlchemy's expanding IN and its multi-row
# INSERT ... RETURNING of every column (with each value's bind and result processing) cost more than the
# statements. On PostgreSQL their text does not vary with the group's size (arrays), so each is prepared
# once per connection instead of parsed and planned per group; SQLite's driver caches one per group size.
_INSERT_COLS = ("channel", "name", "sha256", "size", "received_at", "origin", "status", "parent_id",
                "correlation_id", "pack", "pack_offset", "attempts", "claimed_by", "claimed_until")
_INSERT_PG_TYPES = ("text", "text", "text", "bigint", "timestamptz", "text", "text", "bigint",
                    "text", "text", "bigint", "int", "text", "timestamptz")
_ON_CONFLICT = "ON CONFLICT (channel, sha256) WHERE duplicate_of IS NULL DO NOTHING RETURNING sha256, id"
_PG_INSERT_ORIGINALS = (
    f"INSERT INTO inbound_files ({', '.join(_INSERT_COLS)}) SELECT {', '.join(_INSERT_COLS)} "
    f"FROM unnest({', '.join(f'%b::{t}[]' for t in _INSERT_PG_TYPES)}) WITH ORDINALITY "
    f"AS u({', '.join(_INSERT_COLS)}, ord) ORDER BY ord {_ON_CONFLICT}"
)
_SQLITE_INSERT_ORIGINALS = f"INSERT INTO inbound_files ({', '.join(_INSERT_COLS)}) VALUES {{values}} {_ON_CONFLICT}"
_SQLITE_ROW = f"({', '.join('?' * len(_INSERT_COLS))})"
_PG_ORIGINALS = ("SELECT sha256, id FROM inbound_files "
                 "WHERE channel = %s AND sha256 = ANY(%s::text[]) AND duplicate_of IS NULL")
_SQLITE_ORIGINALS = ("SELECT sha256, id FROM inbound_files "
                     "WHERE channel = ? AND sha256 IN ({marks}) AND duplicate_of IS NULL")
#: rows per statement on SQLite (its limit on bound values is 32,766)
_SQLITE_CHUNK = 500


def _originals(conn: Connection, postgres: bool, channel: str, shas: list[str]) -> dict[str, int]:
    """The ids of the originals (landed before on ``channel``) of these sha256s."""
    if postgres:
        return dict(conn.exec_driver_sql(_PG_ORIGINALS, (channel, shas)).all())
    found: dict[str, int] = {}
    for i in range(0, len(shas), _SQLITE_CHUNK):
        chunk = shas[i : i + _SQLITE_CHUNK]
        sql = _SQLITE_ORIGINALS.format(marks=", ".join("?" * len(chunk)))
        found.update(conn.exec_driver_sql(sql, (channel, *chunk)).all())
    return found


def _insert_originals(conn: Connection, postgres: bool, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert the rows of new originals; the ids of those inserted (not of bytes another process landed
    first), by sha256."""
    if postgres:
        columns = tuple([row.get(c, _DEFAULTS.get(c)) for row in rows] for c in _INSERT_COLS)
        return dict(conn.exec_driver_sql(_PG_INSERT_ORIGINALS, columns).all())
    new_ids: dict[str, int] = {}
    for i in range(0, len(rows), _SQLITE_CHUNK):
        chunk = rows[i : i + _SQLITE_CHUNK]
        # timestamps as SQLAlchemy's SQLite DATETIME stores them: naive UTC text, microseconds
        values = tuple(_sqlite_value(row.get(c, _DEFAULTS.get(c))) for row in chunk for c in _INSERT_COLS)
        sql = _SQLITE_INSERT_ORIGINALS.format(values=", ".join([_SQLITE_ROW] * len(chunk)))
        new_ids.update(conn.exec_driver_sql(sql, values).all())
    return new_ids


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


class _GroupStatements:
    """``land_many``'s statements of the rare path, built once per backend (building one costs more than running it)."""

    def __init__(self, postgres: bool) -> None:
        self.insert_duplicates = insert(inbound_files).returning(inbound_files.c.id, sort_by_parameter_order=True)


@functools.cache
def _group_statements(postgres: bool) -> _GroupStatements:
    return _GroupStatements(postgres)


def _row(channel: str, name: str, sha: str, size: int, received_at: datetime, origin: str,
         correlation_id: str | None, parent_id: int | None) -> dict[str, Any]:
    return {
        "channel": channel,
        "name": name[:1024],
        "sha256": sha,
        "size": size,
        "received_at": received_at,
        "origin": origin[:1024],
        "status": "landed",
        "correlation_id": correlation_id or uuid.uuid4().hex,
        "parent_id": parent_id,
        "pack": None,
        "pack_offset": None,
    }


def _original(conn: Connection, channel: str, sha: str) -> int:
    return int(conn.execute(select(inbound_files.c.id).where(
        inbound_files.c.channel == channel, inbound_files.c.sha256 == sha, inbound_files.c.duplicate_of.is_(None),
    )).scalar_one())


class Lander:
    """What a source calls to land a unit; it wakes the processors afterwards."""

    def __init__(self, db: Database, archive: Archive, on_landed: Callable[[Landed], None] | None = None) -> None:
        self.db = db
        self.archive = archive
        self.on_landed = on_landed

    def land(self, *, channel: str, src: BinaryIO, name: str, origin: str = "",
             received_at: datetime | None = None, correlation_id: str | None = None,
             parent_id: int | None = None) -> Landed:
        landed = land(self.db, self.archive, channel=channel, src=src, name=name, origin=origin,
                      received_at=received_at, correlation_id=correlation_id, parent_id=parent_id)
        self._wake([landed])
        return landed

    def land_many(self, *, channel: str, units: Sequence[Unit]) -> list[Landed]:
        """:func:`land_many`, then wake the processors for each new original."""
        group = land_many(self.db, self.archive, channel=channel, units=units)
        self._wake(group)
        return group

    def _wake(self, landed: Sequence[Landed]) -> None:
        if self.on_landed is not None:
            for one in landed:
                if not one.duplicate:
                    self.on_landed(one)
