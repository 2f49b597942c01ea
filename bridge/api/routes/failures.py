"""``/v1/failures``: quarantined messages with category, reason and position (needs ``ops:read``).

A failure is one message (or, with ``message_index = -1``, a whole file) that
did not commit: its category (``parse``, ``mapping``, ``master_data``,
``delivery``), a reason that names what and where without patient data, its
position, and the missing master-data key. Newest first, keyset-paged.
Reprocessing and resolving are the operator endpoints' business, not this
module's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from bridge.api.deps import DbDep, OpsReader, SettingsDep
from bridge.api.paging import keyset_page, matching
from bridge.api.problems import Problem, responses
from bridge.db.tables import failures

__all__ = ["FailurePagePublic", "FailurePublic", "router"]

router = APIRouter(prefix="/failures", tags=["operations"])

CURSOR_KIND = "fail"
MAX_PAGE = 1000

Category = Literal["parse", "mapping", "master_data", "delivery", "input"]


class FailurePublic(BaseModel):
    id: int
    inbound_id: int = Field(description="the inbound file the message belongs to")
    channel: str
    message_index: int = Field(description="0-based message index in the file; -1 for the whole file")
    category: str = Field(examples=["master_data"])
    reason: str = Field(examples=["no active item crosswalk entry for 'ITEM-9'"])
    kind: str | None = Field(None, description="the crosswalk kind of a master_data failure")
    key: str | None = Field(None, description="the missing code of a master_data failure")
    position: dict[str, Any] = Field(description="file, message, line, column, segment, field, control")
    status: str = Field(examples=["open"])
    attempts: int
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None


class FailurePagePublic(BaseModel):
    items: list[FailurePublic]
    next_cursor: str | None = Field(description="pass as `after` for the next (older) page; null on the last")


def to_public(row: Any) -> FailurePublic:
    try:
        position = orjson.loads(row.position or "{}")
    except orjson.JSONDecodeError:
        position = {}
    return FailurePublic(
        id=row.id, inbound_id=row.inbound_id, channel=row.channel, message_index=row.message_index,
        category=row.category, reason=row.reason, kind=row.kind, key=row.key, position=position,
        status=row.status, attempts=row.attempts, created_at=row.created_at, updated_at=row.updated_at,
        resolved_at=row.resolved_at, resolved_by=row.resolved_by, note=row.note,
    )


@router.get("", response_model=FailurePagePublic, summary="List failures",
            description="Quarantined messages, newest first, filtered by channel, category and status. "
                        "Needs `ops:read`.",
            responses=responses(401, 403, 422))
def list_failures(
    client: OpsReader,
    db: DbDep,
    settings: SettingsDep,
    channel: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    category: Annotated[Category | None, Query()] = None,
    status: Annotated[str | None, Query(max_length=16, pattern=r"^[a-z_]+$", description="open, resolved, ...")] = None,
    after: Annotated[str | None, Query(description="cursor from a previous page's next_cursor")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
) -> FailurePagePublic:
    q = matching(select(failures), {failures.c.channel: channel, failures.c.category: category,
                                    failures.c.status: status})
    rows, next_cursor = keyset_page(db, q, failures.c.id, kind=CURSOR_KIND, after=after,
                                    size=limit or settings.api.default_page_size, newest_first=True)
    return FailurePagePublic(items=[to_public(r) for r in rows], next_cursor=next_cursor)


@router.get("/{id}", response_model=FailurePublic, summary="One failure",
            description="A failure by id. Needs `ops:read`.", responses=responses(401, 403, 404, 422))
def get_failure(id: Annotated[int, Path(ge=1, le=2**63 - 1)], client: OpsReader, db: DbDep) -> FailurePublic:
    with db.read() as conn:
        row = conn.execute(select(failures).where(failures.c.id == id)).first()
    if row is None:
        raise Problem(404, f"no failure with id {id}", slug="not-found", title="Not found")
    return to_public(row)
