"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 10:45:50.315917
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('api_clients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('key_prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('rate_limit_per_minute', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_clients')),
    sa.UniqueConstraint('key_prefix', name=op.f('uq_api_clients_key_prefix')),
    sa.UniqueConstraint('name', name=op.f('uq_api_clients_name'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=255), server_default='', nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('details', sa.Text(), server_default='{}', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_at', ['at'], unique=False)

    op.create_table('control_numbers',
    sa.Column('partner', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('partner', 'kind', name=op.f('pk_control_numbers'))
    )
    op.create_table('crosswalks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('source_code', sa.String(length=255), nullable=False),
    sa.Column('target_code', sa.String(length=255), nullable=False),
    sa.Column('description', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('(true)'), nullable=False),
    sa.Column('attrs', sa.Text(), server_default='{}', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crosswalks')),
    sa.UniqueConstraint('kind', 'source_code', name=op.f('uq_crosswalks_kind_source_code'))
    )
    op.create_table('destination_state',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('fanout_cursor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('paused', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('paused_reason', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_destination_state'))
    )
    op.create_table('inbound_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('origin', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('duplicate_of', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=False),
    sa.Column('message_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('record_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failure_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('progress', sa.Integer(), server_default='-1', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['duplicate_of'], ['inbound_files.id'], name=op.f('fk_inbound_files_duplicate_of_inbound_files')),
    sa.ForeignKeyConstraint(['parent_id'], ['inbound_files.id'], name=op.f('fk_inbound_files_parent_id_inbound_files')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_files'))
    )
    with op.batch_alter_table('inbound_files', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_files_channel', ['channel', 'id'], unique=False)
        batch_op.create_index('ix_inbound_files_status', ['status', 'id'], unique=False)
        batch_op.create_index('uq_inbound_files_channel_sha256_original', ['channel', 'sha256'], unique=True, sqlite_where=sa.text('duplicate_of IS NULL'), postgresql_where=sa.text('duplicate_of IS NULL'))

    op.create_table('failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('message_index', sa.Integer(), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=True),
    sa.Column('key', sa.String(length=255), nullable=True),
    sa.Column('position', sa.Text(), server_default='{}', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=128), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_files.id'], name=op.f('fk_failures_inbound_id_inbound_files')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_failures')),
    sa.UniqueConstraint('inbound_id', 'message_index', name=op.f('uq_failures_inbound_id_message_index'))
    )
    with op.batch_alter_table('failures', schema=None) as batch_op:
        batch_op.create_index('ix_failures_channel', ['channel', 'id'], unique=False)
        batch_op.create_index('ix_failures_kind_key', ['kind', 'key'], unique=False)
        batch_op.create_index('ix_failures_status_category', ['status', 'category', 'id'], unique=False)

    op.create_table('idempotency_keys',
    sa.Column('client_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_idempotency_keys_client_id_api_clients')),
    sa.PrimaryKeyConstraint('client_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('message_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('sender', sa.String(length=128), nullable=False),
    sa.Column('control_id', sa.String(length=128), nullable=False),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('message_index', sa.Integer(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_files.id'], name=op.f('fk_message_keys_inbound_id_inbound_files')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_keys')),
    sa.UniqueConstraint('channel', 'sender', 'control_id', name=op.f('uq_message_keys_channel_sender_control_id'))
    )
    op.create_table('records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('type', sa.String(length=48), nullable=False),
    sa.Column('natural_key', sa.String(length=255), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('message_index', sa.Integer(), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_files.id'], name=op.f('fk_records_inbound_id_inbound_files')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_records')),
    sa.UniqueConstraint('type', 'natural_key', name=op.f('uq_records_type_natural_key'))
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_inbound', ['inbound_id'], unique=False)
        batch_op.create_index('ix_records_type_id', ['type', 'id'], unique=False)

    op.create_table('remote_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mtime', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_files.id'], name=op.f('fk_remote_files_inbound_id_inbound_files')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remote_files')),
    sa.UniqueConstraint('channel', 'path', 'size', 'mtime', name=op.f('uq_remote_files_channel_path_size_mtime'))
    )
    op.create_table('events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=96), nullable=False),
    sa.Column('aggregate_type', sa.String(length=48), nullable=False),
    sa.Column('aggregate_id', sa.String(length=255), nullable=False),
    sa.Column('record_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_files.id'], name=op.f('fk_events_inbound_id_inbound_files')),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_events_record_id_records')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events')),
    sa.UniqueConstraint('id', name=op.f('uq_events_id'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_aggregate', ['aggregate_type', 'aggregate_id', 'seq'], unique=False)
        batch_op.create_index('ix_events_type_seq', ['event_type', 'seq'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('destination', sa.String(length=64), nullable=False),
    sa.Column('ordering_key', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_seq'], ['events.seq'], name=op.f('fk_deliveries_event_seq_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('event_seq', 'destination', name=op.f('uq_deliveries_event_seq_destination'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_due', ['destination', 'status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_deliveries_key', ['destination', 'ordering_key', 'event_seq'], unique=False)

    op.create_table('delivery_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('response', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempts_delivery', ['delivery_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attempts_delivery')

    op.drop_table('delivery_attempts')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_key')
        batch_op.drop_index('ix_deliveries_due')

    op.drop_table('deliveries')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_type_seq')
        batch_op.drop_index('ix_events_aggregate')

    op.drop_table('events')
    op.drop_table('remote_files')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_type_id')
        batch_op.drop_index('ix_records_inbound')

    op.drop_table('records')
    op.drop_table('message_keys')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('failures', schema=None) as batch_op:
        batch_op.drop_index('ix_failures_status_category')
        batch_op.drop_index('ix_failures_kind_key')
        batch_op.drop_index('ix_failures_channel')

    op.drop_table('failures')
    with op.batch_alter_table('inbound_files', schema=None) as batch_op:
        batch_op.drop_index('uq_inbound_files_channel_sha256_original', sqlite_where=sa.text('duplicate_of IS NULL'), postgresql_where=sa.text('duplicate_of IS NULL'))
        batch_op.drop_index('ix_inbound_files_status')
        batch_op.drop_index('ix_inbound_files_channel')

    op.drop_table('inbound_files')
    op.drop_table('destination_state')
    op.drop_table('crosswalks')
    op.drop_table('control_numbers')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_at')

    op.drop_table('audit_log')
    op.drop_table('api_clients')

