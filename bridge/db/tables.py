"""Every table bridge owns, as SQLAlchemy Core metadata (the source of the migrations).

Tables, in the order a file flows through them:

- ``inbound_files``: one row per landed unit (file, MLLP message, API upload),
  with its sha256 and where its raw bytes are archived. The same bytes on the
  same channel land once: a partial unique index on (channel, sha256) for the
  non-duplicate rows; a re-drop gets its own row with ``status='duplicate'``.
  ``progress`` is the highest message index committed, so processing resumes
  after a crash without redoing committed messages.
- ``message_keys``: control ids (HL7 MSH-10, X12 ISA13) seen per sender, so a
  resend is recorded as a duplicate and never charged twice.
- ``failures``: one row per failed message (``message_index = -1`` for the
  whole file) with category, reason, position and the missing master-data key.
- ``records``: canonical records, unique by (type, natural_key), upserted.
- ``events``: the outbox. ``seq`` is the feed cursor: writers take a lock
  before inserting events (SQLite: the single writer; PostgreSQL: an advisory
  transaction lock), so seq order is commit order and a cursor never skips an
  event whose transaction committed late.
- ``deliveries``, ``delivery_attempts``, ``destination_state``: the relay's
  per-destination fan-out, retry schedule and every attempt.
- ``crosswalks``: master-data code maps by kind.
- ``api_clients``, ``idempotency_keys``, ``audit_log``: the API's side;
  ``console_sessions``: the operator console's server-side sessions.
- ``remote_files``, ``control_numbers``: SFTP leases and seen files; X12
  control-number sequences per partner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

__all__ = ["metadata"]

naming = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=naming)

#: an auto-increment key: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        # PostgreSQL sessions run in UTC (bridge.db.engine), so the common case is already UTC: a page of
        # records reads two timestamps per row, and astimezone() cost more than the rest of the row's decoding
        if value is None or value.tzinfo is UTC:
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


inbound_files = Table(
    "inbound_files",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("origin", String(1024), nullable=False, server_default=""),
    Column("status", String(16), nullable=False),
    Column("duplicate_of", Id, ForeignKey("inbound_files.id"), nullable=True),
    Column("parent_id", Id, ForeignKey("inbound_files.id"), nullable=True),
    Column("correlation_id", String(64), nullable=False),
    Column("message_count", Integer, nullable=False, server_default="0"),
    Column("record_count", Integer, nullable=False, server_default="0"),
    Column("failure_count", Integer, nullable=False, server_default="0"),
    Column("progress", Integer, nullable=False, server_default="-1"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_until", UtcDateTime, nullable=True),
    Column("processed_at", UtcDateTime, nullable=True),
    Column("error", Text, nullable=True),
    #: the pack file (path in the archive) holding this unit's bytes at ``pack_offset`` (an MLLP group); NULL: its own object
    Column("pack", String(255), nullable=True),
    Column("pack_offset", BigInteger, nullable=True),
    Index("ix_inbound_files_status", "status", "id"),
    Index("ix_inbound_files_channel", "channel", "id"),
    Index(
        "uq_inbound_files_channel_sha256_original",
        "channel",
        "sha256",
        unique=True,
        sqlite_where=text("duplicate_of IS NULL"),
        postgresql_where=text("duplicate_of IS NULL"),
    ),
)

message_keys = Table(
    "message_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("sender", String(128), nullable=False),
    Column("control_id", String(128), nullable=False),
    Column("inbound_id", Id, ForeignKey("inbound_files.id"), nullable=False),
    Column("message_index", Integer, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
    UniqueConstraint("channel", "sender", "control_id"),
)

failures = Table(
    "failures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("inbound_id", Id, ForeignKey("inbound_files.id"), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("message_index", Integer, nullable=False),
    Column("category", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("kind", String(64), nullable=True),
    Column("key", String(255), nullable=True),
    Column("position", Text, nullable=False, server_default="{}"),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolved_by", String(128), nullable=True),
    Column("note", Text, nullable=True),
    UniqueConstraint("inbound_id", "message_index"),
    Index("ix_failures_status_category", "status", "category", "id"),
    Index("ix_failures_status_id", "status", "id"),
    Index("ix_failures_channel", "channel", "id"),
    Index("ix_failures_kind_key", "kind", "key"),
)

records = Table(
    "records",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("type", String(48), nullable=False),
    Column("natural_key", String(255), nullable=False),
    Column("data", Text, nullable=False),
    Column("content_hash", String(40), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("inbound_id", Id, ForeignKey("inbound_files.id"), nullable=True),
    Column("message_index", Integer, nullable=True),
    Column("correlation_id", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("type", "natural_key"),
    Index("ix_records_type_id", "type", "id"),
    Index("ix_records_inbound", "inbound_id"),
)

events = Table(
    "events",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("event_type", String(96), nullable=False),
    Column("aggregate_type", String(48), nullable=False),
    Column("aggregate_id", String(255), nullable=False),
    Column("record_id", Id, ForeignKey("records.id"), nullable=True),
    Column("inbound_id", Id, ForeignKey("inbound_files.id"), nullable=True),
    Column("payload", Text, nullable=False),
    Column("correlation_id", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # the one destination this event goes to (an ACK's or outbound file's return channel);
    # NULL: every destination subscribed to its type (migration 0004, ``outbox.relay``)
    Column("route", String(64), nullable=True),
    Index("ix_events_type_seq", "event_type", "seq"),
    Index("ix_events_aggregate", "aggregate_type", "aggregate_id", "seq"),
)

destination_state = Table(
    "destination_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("fanout_cursor", BigInteger, nullable=False, server_default="0"),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("paused_reason", Text, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_seq", Id, ForeignKey("events.seq"), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("ordering_key", String(320), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_until", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    # may be the first pending delivery of its key: the claim's candidates (migration 0005, ``outbox.relay``)
    Column("head", Boolean, nullable=False, server_default=text("false")),
    UniqueConstraint("event_seq", "destination"),
    Index("ix_deliveries_due", "destination", "status", "next_attempt_at"),
    # the claim's "earlier pending delivery of this key?" probe (migration 0003)
    Index("ix_deliveries_pending_key", "destination", "ordering_key", "event_seq",
          sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
    # the claim's head scan: only rows flagged head (at most a few per key), in event order (migration 0005)
    Index("ix_deliveries_pending_head", "event_seq",
          # SQLite matches a partial index only on the very terms: the query says head = 1
          sqlite_where=text("status = 'pending' AND head = 1"), postgresql_where=text("status = 'pending' AND head")),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("response", Text, nullable=True),
    Index("ix_delivery_attempts_delivery", "delivery_id"),
)

crosswalks = Table(
    "crosswalks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("source_code", String(255), nullable=False),
    Column("target_code", String(255), nullable=False),
    Column("description", String(1024), nullable=False, server_default=""),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("attrs", Text, nullable=False, server_default="{}"),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(128), nullable=True),
    UniqueConstraint("kind", "source_code"),
)

#: one row: the crosswalks' version, bumped by triggers on any change to ``crosswalks`` (migration 0006);
#: processes keep crosswalk entries while it stands (``mappings.crosswalks``)
crosswalk_state = Table(
    "crosswalk_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False, server_default="0"),
)

api_clients = Table(
    "api_clients",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("rate_limit_per_minute", Integer, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("client_id", Id, ForeignKey("api_clients.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False, server_default=""),
    Column("reason", Text, nullable=True),
    Column("details", Text, nullable=False, server_default="{}"),
    Index("ix_audit_log_at", "at"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    # only the SHA-256 of the session token is stored; the token lives in the operator's cookie
    Column("id_hash", String(64), primary_key=True),
    Column("client_id", Id, ForeignKey("api_clients.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_console_sessions_expires_at", "expires_at"),
)

remote_files = Table(
    "remote_files",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("inbound_id", Id, ForeignKey("inbound_files.id"), nullable=True),
    Column("error", Text, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("channel", "path", "size", "mtime"),
)

control_numbers = Table(
    "control_numbers",
    metadata,
    Column("partner", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


def now() -> datetime:
    return datetime.now(UTC)
