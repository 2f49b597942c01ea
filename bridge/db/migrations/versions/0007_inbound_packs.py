"""inbound_files: ``pack`` and ``pack_offset``, where a unit landed inside a pack file

The MLLP listener lands a group of messages at once. Each message used to be
its own archive object: a temp file created, written, fsynced and renamed into
a directory of its sha256, which cost more CPU than parsing and mapping the
message (0.21 ms of system and user time per message, against 0.02 ms for one
write and one fsync for the group; ``bench/ingest_hl7.py``), and the creates
waited on the file system's journal. A group is now appended to a pack file
(``packs/<day>/<writer>.pack``, see ``bridge.pipeline.land.Archive.append``), and
each message's row says which file and where: ``pack`` is that file's path
relative to the archive. ``sha256`` stays the message's own: the duplicate rule
and every cross-reference are unchanged. NULL: the unit is an archive object of
its own (every file, and a group of one message).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 01:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('inbound_files', sa.Column('pack', sa.String(length=255), nullable=True))
    op.add_column('inbound_files', sa.Column('pack_offset', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # the rows of packed units would lose their bytes' address: refuse rather than strand them
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM inbound_files WHERE pack IS NOT NULL LIMIT 1")).first():
        raise RuntimeError("inbound_files has units stored in packs (MLLP groups); a downgrade below 0007 would "
                           "lose where their bytes are")
    # plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy of inbound_files would have to
    # rebuild its partial unique index by hand
    op.drop_column('inbound_files', 'pack_offset')
    op.drop_column('inbound_files', 'pack')
