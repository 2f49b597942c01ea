"""The audit log's one writer: every operator action (CLI, API, console, relay operations) appends here."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, insert

from bridge.db.engine import utcnow
from bridge.db.tables import audit_log


def audit(conn: Connection, actor: str, action: str, target: str = "", reason: str | None = None,
          details: dict[str, Any] | None = None) -> None:
    """Append one audit row in the caller's transaction."""
    conn.execute(insert(audit_log).values(
        at=utcnow(), actor=actor[:128], action=action[:64], target=str(target)[:255], reason=reason or None,
        details=orjson.dumps(details or {}, default=str).decode()))
