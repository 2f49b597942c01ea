"""events: a nullable ``route``; deliveries: a partial index of pending rows by event order

ACKs (X12 TA1/999/997, HL7 ACK files) and outbound files (an X12 850 to a
vendor) belong to one destination, the partner's return channel, not to every
destination subscribed to their type. NULL keeps the fan-out by subscription.
No index: the relay reads ``route`` alongside ``seq`` in its fan-out scan and
never looks events up by it.

``ix_deliveries_pending_seq`` holds the pending deliveries by ``event_seq``: the
relay's claim scans heads oldest first, and without it PostgreSQL walked every
delivered row (the events primary key, probing deliveries) before the first
pending one, a cost that grew with the delivered history of every claim.

On PostgreSQL, a statement trigger on ``events`` sends ``NOTIFY bridge_outbox,
'events <schema>'`` (delivered at commit), so relay processes waiting in
``LISTEN`` fan out new events at once instead of at their next poll, whichever
code path inserted them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_NOTIFY_FUNCTION = """
CREATE FUNCTION bridge_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bridge_outbox', 'events ' || current_schema());
    RETURN NULL;
END $$
"""
_NOTIFY_TRIGGER = ("CREATE TRIGGER events_notify_outbox AFTER INSERT ON events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION bridge_outbox_notify()")


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('route', sa.String(length=64), nullable=True))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_pending_seq', ['event_seq'], unique=False,
                              sqlite_where=sa.text("status = 'pending'"),
                              postgresql_where=sa.text("status = 'pending'"))
    if op.get_context().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_notify_outbox ON events")
        op.execute("DROP FUNCTION bridge_outbox_notify()")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_pending_seq')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('route')
