"""Landing: raw bytes into the content-addressed archive, one ``inbound_files`` row committed.

The archive keeps each distinct content once, under ``<root>/<sha[:2]>/<sha[2:4]>/<sha>``;
bytes stream through a temp file in the archive (fsynced, then renamed into
place), so a 200 MB file never sits in memory and a crash leaves no half blob
under a real name.

The same bytes on the same channel land once: the partial unique index on
(channel, sha256) decides, even between two processes racing on one drop. A
re-drop gets its own row with ``status='duplicate'`` pointing at the original,
so the operator sees it arrived, and it is never processed again.

Names from the outside (a dropped file name, an upload's filename) are only
metadata here: nothing builds a path from them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import exc, insert, select

from bridge.db import Database, utcnow
from bridge.db.tables import inbound_files

__all__ = ["Archive", "Landed", "Lander", "land"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class Archive:
    """Content-addressed storage of raw inbound bytes on local disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def store(self, src: BinaryIO) -> tuple[str, int]:
        """Copy ``src`` into the archive; return (sha256, size)."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="in-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self.path_for(sha)
            if final.exists():
                os.unlink(tmp_name)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, final)
            return sha, size
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise

    def store_bytes(self, data: bytes) -> tuple[str, int]:
        import io

        return self.store(io.BytesIO(data))

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path_for(sha256), "rb")


@dataclass(frozen=True, slots=True)
class Landed:
    inbound_id: int
    sha256: str
    size: int
    duplicate_of: int | None
    correlation_id: str

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
    received_at = received_at or utcnow()
    correlation_id = correlation_id or uuid.uuid4().hex
    row = {
        "channel": channel,
        "name": name[:1024],
        "sha256": sha,
        "size": size,
        "received_at": received_at,
        "origin": origin[:1024],
        "status": "landed",
        "correlation_id": correlation_id,
        "parent_id": parent_id,
    }
    try:
        with db.write() as conn:
            new_id = conn.execute(insert(inbound_files).returning(inbound_files.c.id), row).scalar_one()
        log.info("landed", extra={"channel": channel, "inbound_id": new_id, "sha256": sha, "size": size})
        return Landed(new_id, sha, size, None, correlation_id)
    except exc.IntegrityError:
        pass
    with db.write() as conn:
        original = conn.execute(
            select(inbound_files.c.id).where(
                inbound_files.c.channel == channel,
                inbound_files.c.sha256 == sha,
                inbound_files.c.duplicate_of.is_(None),
            )
        ).scalar_one()
        row.update(status="duplicate", duplicate_of=original)
        dup_id = conn.execute(insert(inbound_files).returning(inbound_files.c.id), row).scalar_one()
    log.info("duplicate", extra={"channel": channel, "inbound_id": dup_id, "duplicate_of": original})
    return Landed(dup_id, sha, size, original, correlation_id)


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
        if self.on_landed is not None and not landed.duplicate:
            self.on_landed(landed)
        return landed
