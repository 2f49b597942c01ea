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

Pages are read by one statement and written out by :mod:`bridge.api.paging`:
payloads are parsed on every read (a corrupt row is a generic 500, never a
malformed 200), and a payload with nothing to mask is spliced back as its
stored text rather than serialised again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select

from bridge.api.deps import EventsReader, SettingsDep
from bridge.api.keys import Client
from bridge.api.paging import fetch_rows, json_response, stored_object
from bridge.api.phi import MASK, PHI_SCOPE, hidden_fields, mask_fields
from bridge.api.problems import Problem, responses
from bridge.db import like_escape
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


#: the columns an EventPublic is made of, in one SELECT, in the order :func:`to_json` unpacks them
COLUMNS = (events.c.seq, events.c.id, events.c.event_type, events.c.aggregate_type, events.c.aggregate_id,
           events.c.record_id, events.c.inbound_id, events.c.correlation_id, events.c.created_at, events.c.payload)

#: the feed after ``:after``, and its filters by event type (built once: :meth:`bridge.db.Database.fetch_rows`)
PAGE = select(*COLUMNS).where(events.c.seq > bindparam("after")).order_by(events.c.seq).limit(bindparam("size"))
PAGE_OF_TYPE = PAGE.where(events.c.event_type == bindparam("type"))
PAGE_OF_FAMILY = PAGE.where(events.c.event_type.like(bindparam("pattern"), escape="\\"))


class PayloadMask:
    """Masks what ``client`` may not see in event payloads; the answer per record type is kept for the page."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.phi = client.allows(PHI_SCOPE)
        self._hidden: dict[str | None, frozenset[str]] = {}

    def __call__(self, payload: dict[str, Any]) -> bool:
        """Mask ``payload`` in place; whether anything changed."""
        if self.phi:
            return False
        changed = False
        record = payload.get("record")
        if isinstance(record, dict):
            kind = payload.get("record_type")
            hidden = self._hidden.get(kind)
            if hidden is None:
                hidden = self._hidden[kind] = hidden_fields(kind, self.client)
            changed = mask_fields(record, hidden)
        data = payload.get("data")
        if isinstance(data, dict) and data.get("phi") and "content" in data:
            data["content"] = MASK  # an outbound message holding patient identifiers (a DFT^P03)
            changed = True
        return changed


def to_json(row: Any, mask: PayloadMask) -> dict[str, Any]:
    """:class:`EventPublic` of a row of :data:`COLUMNS` for orjson, its payload masked by ``mask``.

    The row is unpacked as a tuple (see :func:`bridge.api.routes.records.to_json`).
    """
    seq, id_, event_type, aggregate_type, aggregate_id, record_id, inbound_id, correlation_id, created, text = row
    payload = stored_object(text, f"event {seq}")
    return {"seq": seq, "id": id_, "type": event_type, "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id, "record_id": record_id, "inbound_id": inbound_id,
            "correlation_id": correlation_id, "created_at": created,
            "payload": payload if mask(payload) else orjson.Fragment(text)}


@router.get("", response_model=EventPagePublic, summary="Follow the event feed",
            description="Events after the cursor `after` (an event seq; 0 or absent for the beginning), in "
                        "commit order. `type` keeps one event type, or a family with a trailing `*` "
                        "(`inventory.*`). A commit that lands late is never skipped. Needs `events:read`.",
            responses=responses(401, 403, 422))
async def list_events(
    request: Request,
    client: EventsReader,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="the next_cursor of the previous page")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
    type: Annotated[str | None, Query(max_length=96, pattern=r"^[A-Za-z0-9._*-]+$",
                                      description="event type, or a prefix ending in *")] = None,
) -> Response:
    statement = PAGE
    params: dict[str, Any] = {"after": after, "size": limit or settings.api.default_page_size}
    if type:
        if type.endswith("*"):
            prefix = type[:-1]
            if "*" in prefix:
                raise Problem(422, "query parameter 'type': only a trailing * is allowed",
                              slug="invalid-parameter", title="Invalid parameter",
                              extra={"errors": [{"location": "query", "name": "type",
                                                 "message": "only a trailing * is allowed"}]})
            if prefix:
                statement, params["pattern"] = PAGE_OF_FAMILY, like_escape(prefix) + "%"
        else:
            statement, params["type"] = PAGE_OF_TYPE, type
    rows = await fetch_rows(request, statement, params)
    mask = PayloadMask(client)
    return json_response({"items": [to_json(r, mask) for r in rows],
                          "next_cursor": rows[-1][0] if rows else after})
