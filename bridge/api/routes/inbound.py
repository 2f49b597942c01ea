"""``/v1/inbound``: landed files and where they stand (needs ``ops:read``).

Status is the file's lifecycle: ``landed`` -> ``processing`` -> ``processed``,
``partial`` (some messages failed, the rest committed) or ``failed``; a
re-drop of the same bytes is ``duplicate`` and points at the original. One
file's detail lists its failures. Newest first, keyset-paged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from bridge.api.deps import DbDep, OpsReader, SettingsDep
from bridge.api.paging import keyset_page, matching
from bridge.api.problems import Problem, responses
from bridge.api.routes.failures import FailurePublic
from bridge.api.routes.failures import to_public as failure_public
from bridge.db.tables import failures, inbound_files

__all__ = ["InboundDetailPublic", "InboundPagePublic", "InboundPublic", "router"]

router = APIRouter(prefix="/inbound", tags=["operations"])

CURSOR_KIND = "in"
MAX_PAGE = 1000

Status = Literal["landed", "processing", "processed", "partial", "failed", "duplicate"]


class InboundPublic(BaseModel):
    id: int
    channel: str
    name: str = Field(description="the name the file arrived under")
    sha256: str
    size: int
    received_at: datetime
    status: str = Field(examples=["processed"])
    duplicate_of: int | None = Field(None, description="the original, for a re-drop of the same bytes")
    parent_id: int | None = None
    correlation_id: str
    message_count: int
    record_count: int
    failure_count: int = Field(description="open failures")
    attempts: int
    processed_at: datetime | None = None
    error: str | None = Field(None, description="the file-level error, if the file as a whole failed")


class InboundPagePublic(BaseModel):
    items: list[InboundPublic]
    next_cursor: str | None = Field(description="pass as `after` for the next (older) page; null on the last")


class InboundDetailPublic(InboundPublic):
    failures: list[FailurePublic]


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in InboundPublic.model_fields}


@router.get("", response_model=InboundPagePublic, summary="List inbound files",
            description="Landed files, newest first, with their processing status; filter by channel and "
                        "status. Needs `ops:read`.",
            responses=responses(401, 403, 422))
def list_inbound(
    client: OpsReader,
    db: DbDep,
    settings: SettingsDep,
    channel: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    status: Annotated[Status | None, Query()] = None,
    after: Annotated[str | None, Query(description="cursor from a previous page's next_cursor")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
) -> InboundPagePublic:
    q = matching(select(inbound_files), {inbound_files.c.channel: channel, inbound_files.c.status: status})
    rows, next_cursor = keyset_page(db, q, inbound_files.c.id, kind=CURSOR_KIND, after=after,
                                    size=limit or settings.api.default_page_size, newest_first=True)
    return InboundPagePublic(items=[InboundPublic(**_fields(r)) for r in rows], next_cursor=next_cursor)


@router.get("/{id}", response_model=InboundDetailPublic, summary="One inbound file and its failures",
            description="A landed file with its status and every failure recorded against it (open and "
                        "resolved), in message order. Needs `ops:read`.",
            responses=responses(401, 403, 404, 422))
def get_inbound(id: Annotated[int, Path(ge=1, le=2**63 - 1)], client: OpsReader, db: DbDep) -> InboundDetailPublic:
    with db.read() as conn:
        row = conn.execute(select(inbound_files).where(inbound_files.c.id == id)).first()
        if row is None:
            raise Problem(404, f"no inbound file with id {id}", slug="not-found", title="Not found")
        fails = conn.execute(
            select(failures).where(failures.c.inbound_id == id).order_by(failures.c.message_index, failures.c.id)
        ).all()
    return InboundDetailPublic(**_fields(row), failures=[failure_public(f) for f in fails])
