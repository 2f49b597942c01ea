"""deliveries: a ``head`` flag on the first pending delivery of each ordering key

The relay's claim looks for the first pending delivery of each (destination,
ordering key). Found by walking every pending row in ``event_seq`` order
(``ix_deliveries_pending_seq``) with a probe "an earlier one pending?", a claim
read the whole backlog whenever most keys were held by other workers: the
followers of a held key were visited, probed and dropped, on every claim.
``head`` marks the rows that may be the first pending one of their key (the
fan-out, the relay's record step and replay keep it; see ``outbox.relay``), and
``ix_deliveries_pending_head`` holds only those rows, so a claim visits at most
one row per key. The old index is dropped: nothing else reads it. So is
``ix_deliveries_key`` (every delivery by destination, key and order): the
claim's probes use the partial ``ix_deliveries_pending_key`` since 0003 and no
query reads the full one any more, while every fanned-out row and every
recorded attempt (a non-HOT update) paid for an entry in it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 17:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MARK_HEADS = """
UPDATE deliveries SET head = true
WHERE status = 'pending' AND NOT EXISTS (
    SELECT 1 FROM deliveries e
    WHERE e.destination = deliveries.destination AND e.ordering_key = deliveries.ordering_key
      AND e.status = 'pending' AND e.event_seq < deliveries.event_seq)
"""


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('head', sa.Boolean(), nullable=False, server_default=sa.text('false')))
        batch_op.drop_index('ix_deliveries_pending_seq')
        batch_op.drop_index('ix_deliveries_key')
    op.execute(_MARK_HEADS)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_pending_head', ['event_seq'], unique=False,
                              sqlite_where=sa.text("status = 'pending' AND head = 1"),
                              postgresql_where=sa.text("status = 'pending' AND head"))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_pending_head')
        batch_op.create_index('ix_deliveries_key', ['destination', 'ordering_key', 'event_seq'], unique=False)
        batch_op.create_index('ix_deliveries_pending_seq', ['event_seq'], unique=False,
                              sqlite_where=sa.text("status = 'pending'"),
                              postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_column('head')
