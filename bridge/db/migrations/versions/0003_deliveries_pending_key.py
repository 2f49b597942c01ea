"""deliveries: a partial index on the pending deliveries of each ordering key

The relay's claim asks, for every candidate, "is an earlier delivery of the
same destination and ordering key still pending?". ``ix_deliveries_key`` also
holds every delivered and dead row, so that probe walks a key's whole history;
this index holds only pending rows (a handful per key), on PostgreSQL and SQLite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:40:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_pending_key', ['destination', 'ordering_key', 'event_seq'], unique=False,
                              sqlite_where=sa.text("status = 'pending'"),
                              postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_pending_key')
