"""Building relays for tests: fast backoff, destinations from plain dicts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import deliveries, delivery_attempts, events
from bridge.settings import DestinationConfig, RelayConfig
from outbox.relay import Relay


def make_relay(db: Database, dests: dict[str, dict[str, Any]], **relay: Any) -> Relay:
    cfg = {"backoff_base_seconds": 0.005, "backoff_cap_seconds": 0.02, "poll_seconds": 0.02, **relay}
    relay_obj = Relay(db, {n: DestinationConfig.model_validate(b) for n, b in dests.items()}, RelayConfig(**cfg))
    relay_obj.ensure_state()
    return relay_obj


def delivery_rows(db: Database, destination: str) -> list[Any]:
    with db.read() as conn:
        return conn.execute(
            select(deliveries, events.c.id.label("event_id"), events.c.event_type)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .where(deliveries.c.destination == destination).order_by(deliveries.c.event_seq)
        ).all()


def attempt_rows(db: Database, delivery_id: int) -> list[Any]:
    with db.read() as conn:
        return conn.execute(select(delivery_attempts).where(delivery_attempts.c.delivery_id == delivery_id)
                            .order_by(delivery_attempts.c.id)).all()
