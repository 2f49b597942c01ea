"""``/v1/events``: the outbox as a pull feed, paged by a cursor that never skips a late commit.

The cursor is the event's ``seq``. Paging by an auto-increment key is unsafe
in general: a transaction that took seq 7 can commit after one that took
seq 8, and a reader that already moved past 8 never sees 7 (the warning in
the eventsourcing project's notification log). Here it is safe because every
writer takes the events lock right before inserting events and holds it to
commit (:meth:`bridge.db.engine.Database.lock_events`: an advisory
transaction lock on PostgreSQL; SQLite has a single writer), so seq order is
commit order: once a reader sees seq N, every seq below N that will ever
exist is already visible. ``tests/api/test_events.py`` proves it with two
writers committing out of order on PostgreSQL.

``next_cursor`` is the seq of the last event returned, or ``after`` itself
when there is nothing new: a follower keeps polling with it.

Responses are serialised here with orjson and returned as a ``Response``
(FastAPI skips validating them again; ``response_model`` documents them).
Payloads are still parsed on every read, so a corrupt row is a generic 500,
never a malformed 200.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from bridge.api.deps import DbDep, EventsReader, SettingsDep
from bridge.api.keys import Client
from bridge.api.phi import MASK, PHI_SCOPE, mask_record
from bridge.api.problems import Problem, responses
from bridge.api.routes.records import json_response
from bridge.db.tables import events

__all__ = ["EventPagePublic", "EventPublic", "router"]

router = APIRouter(prefix="/events", tags=["events"])

MAX_PAGE = 1000


class EventPublic(BaseModel):
    """One outbox event (Debezium outbox meanings: id dedupes, aggregate id orders)."""

    seq: int = Field(description="position in the feed; the cursor")
    id: str = Field(description="UUID; the idempotency key of this event")
    type: str = Field(examples=["inventory.movement.recorded"])
    aggregate_type: str
    aggregate_id: str = Field(description="events of one aggregate are delivered in seq order")
    record_id: int | None = None
    inbound_id: int | None = None
    correlation_id: str | None = None
    created_at: datetime
    payload: dict[str, Any] = Field(description="the event envelope; its `record` has PHI masked without phi:read")


class EventPagePublic(BaseModel):
    items: list[EventPublic]
    next_cursor: int = Field(description="pass as `after` next time; equals `after` when nothing is new")


def to_public(row: Any, client: Client) -> EventPublic:
    return EventPublic(seq=row.seq, id=row.id, type=row.event_type, aggregate_type=row.aggregate_type,
                       aggregate_id=row.aggregate_id, record_id=row.record_id, inbound_id=row.inbound_id,
                       correlation_id=row.correlation_id, created_at=row.created_at,
                       payload=masked_payload(row.payload, client))


def masked_payload(text: str, client: Client) -> Any:
    """The stored payload ``text`` parsed, with PHI masked unless ``client`` may see it."""
    payload = orjson.loads(text)
    if isinstance(payload, dict) and "record" in payload:
        payload["record"] = mask_record(payload.get("record_type"), payload["record"], client)
    data = payload.get("data") if isinstance(payload, dict) else None
    if isinstance(data, dict) and data.get("phi") and not client.allows(PHI_SCOPE) and "content" in data:
        data["content"] = MASK  # an outbound message holding patient identifiers (a DFT^P03)
    return payload


def to_json(row: Any, client: Client) -> dict[str, Any]:
    """:class:`EventPublic` of ``row`` as a dict for orjson."""
    payload = masked_payload(row.payload, client)
    if not isinstance(payload, dict):
        raise TypeError(f"event {row.seq}: stored payload is not a JSON object")
    return {"seq": row.seq, "id": row.id, "type": row.event_type, "aggregate_type": row.aggregate_type,
            "aggregate_id": row.aggregate_id, "record_id": row.record_id, "inbound_id": row.inbound_id,
            "correlation_id": row.correlation_id, "created_at": row.created_at, "payload": payload}


@router.get("", response_model=EventPagePublic, summary="Follow the event feed",
            description="Events after the cursor `after` (an event seq; 0 or absent for the beginning), in "
                        "commit order. `type` keeps one event type, or a family with a trailing `*` "
                        "(`inventory.*`). A commit that lands late is never skipped. Needs `events:read`.",
            responses=responses(401, 403, 422))
def list_events(
    client: EventsReader,
    db: DbDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, description="the next_cursor of the previous page")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
    type: Annotated[str | None, Query(max_length=96, pattern=r"^[A-Za-z0-9._*-]+$",
                                      description="event type, or a prefix ending in *")] = None,
) -> Response:
    size = limit or settings.api.default_page_size
    q = select(events).where(events.c.seq > after)
    if type:
        if type.endswith("*"):
            prefix = type[:-1]
            if "*" in prefix:
                raise Problem(422, "query parameter 'type': only a trailing * is allowed",
                              slug="invalid-parameter", title="Invalid parameter",
                              extra={"errors": [{"location": "query", "name": "type",
                                                 "message": "only a trailing * is allowed"}]})
            if prefix:
                escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                q = q.where(events.c.event_type.like(escaped + "%", escape="\\"))
        else:
            q = q.where(events.c.event_type == type)
    q = q.order_by(events.c.seq).limit(size)
    with db.read() as conn:
        rows = conn.execute(q).all()
    return json_response({"items": [to_json(r, client) for r in rows],
                          "next_cursor": rows[-1].seq if rows else after})
