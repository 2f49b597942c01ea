"""``/v1/records``: canonical records by type, keyset-paged, PHI masked without ``phi:read``.

The type in the URL is the record type in URL form (``inventory-movements``,
``items``, ``purchase-orders``), resolved by :func:`mappings.canonical.record_class`.

Paging is keyset on ``records.id`` with an opaque cursor, so a page costs the
same at any depth and rows added while a client pages never make it repeat or
skip a row that existed when it started. A record inserted by a transaction
that commits after a later id was already read can fall behind the cursor:
this listing is a snapshot walk, and the event feed (``/v1/events``, whose
cursor is commit-ordered) is the way to follow changes.

Rows are read by one statement and written out by :mod:`bridge.api.paging`:
the stored ``data`` is parsed (a corrupt row is a 500, never a malformed 200),
PHI fields are masked in place, and a record with nothing to mask is spliced
back as its stored text rather than serialised again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import bindparam, select

from bridge.api.deps import DbDep, RecordsReader, SettingsDep
from bridge.api.paging import json_response, keyset_rows, read_all, stored_object
from bridge.api.phi import hidden_fields, mask_fields
from bridge.api.problems import Problem, responses
from bridge.db.tables import records
from mappings.canonical import RECORD_TYPES, CanonicalRecord, record_class

__all__ = ["RecordPagePublic", "RecordPublic", "router"]

router = APIRouter(prefix="/records", tags=["records"])

CURSOR_KIND = "rec"
MAX_PAGE = 1000


class RecordPublic(BaseModel):
    """One canonical record and where it came from."""

    id: int = Field(description="bridge's id of the record (stable across updates)")
    type: str = Field(examples=["inventory_movement"])
    natural_key: str = Field(description="the identity the source gives it; a replay updates, never duplicates")
    version: int = Field(description="1 on insert, +1 on each change of content")
    data: dict[str, Any] = Field(description="the canonical fields; PHI fields read '***' without phi:read")
    inbound_id: int | None = Field(None, description="the inbound file that last wrote it")
    message_index: int | None = None
    correlation_id: str | None = None
    created_at: datetime
    updated_at: datetime


class RecordPagePublic(BaseModel):
    items: list[RecordPublic]
    next_cursor: str | None = Field(description="pass as `after` for the next page; null on the last page")


def resolve_type(type_: str) -> type[CanonicalRecord]:
    cls = record_class(type_)
    if cls is None:
        known = ", ".join(sorted(t.replace("_", "-") + "s" for t in RECORD_TYPES))
        raise Problem(404, f"no record type {type_!r} (known: {known})", slug="unknown-record-type",
                      title="Unknown record type")
    return cls


#: the columns a RecordPublic is made of, in one SELECT, in the order :func:`to_json` unpacks them
COLUMNS = (records.c.id, records.c.type, records.c.natural_key, records.c.version, records.c.data,
           records.c.inbound_id, records.c.message_index, records.c.correlation_id, records.c.created_at,
           records.c.updated_at)

#: a page of one type, keyset-paged by id (built once: :meth:`bridge.db.Database.fetch_rows`)
PAGE = (select(*COLUMNS).where(records.c.type == bindparam("type"), records.c.id > bindparam("after"))
        .order_by(records.c.id).limit(bindparam("size")))
PAGE_SINCE = PAGE.where(records.c.updated_at >= bindparam("since"))


def to_json(row: Any, hidden: frozenset[str]) -> dict[str, Any]:
    """:class:`RecordPublic` of a row of :data:`COLUMNS` for orjson, the ``hidden`` fields of its data masked.

    The row is unpacked as a tuple (a driver's row on PostgreSQL, a SQLAlchemy ``Row`` on SQLite, whose
    attributes cost about ten times a tuple item).
    """
    id_, type_, natural_key, version, text, inbound_id, message_index, correlation_id, created, updated = row
    data = stored_object(text, f"record {id_}")
    return {"id": id_, "type": type_, "natural_key": natural_key, "version": version,
            "data": data if mask_fields(data, hidden) else orjson.Fragment(text), "inbound_id": inbound_id,
            "message_index": message_index, "correlation_id": correlation_id, "created_at": created,
            "updated_at": updated}


TypePath = Annotated[str, Path(alias="type", description="record type in URL form", examples=["inventory-movements"])]


@router.get("/{type}", response_model=RecordPagePublic, summary="List records of a type",
            description="Records of one canonical type in id order, keyset-paged: pass the previous page's "
                        "`next_cursor` as `after`. `updated_since` keeps records changed at or after that "
                        "instant. Needs `records:read`; PHI fields are masked unless the key has `phi:read`.",
            responses=responses(401, 403, 404, 422))
async def list_records(
    request: Request,
    type_: TypePath,
    client: RecordsReader,
    settings: SettingsDep,
    after: Annotated[str | None, Query(description="cursor from a previous page's next_cursor")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="page size (default from api config)")] = None,
    updated_since: Annotated[AwareDatetime | None, Query(description="ISO 8601 with offset")] = None,
) -> Response:
    cls = resolve_type(type_)
    params: dict[str, Any] = {"type": cls.record_type}
    if updated_since is not None:
        params["since"] = updated_since
    statement = PAGE if updated_since is None else PAGE_SINCE
    rows, next_cursor = await keyset_rows(request, statement, params, kind=CURSOR_KIND, after=after,
                                    size=limit or settings.api.default_page_size)
    hidden = hidden_fields(cls.record_type, client)
    return json_response({"items": [to_json(r, hidden) for r in rows], "next_cursor": next_cursor})


@router.get("/{type}/{id}", response_model=RecordPublic, summary="One record",
            description="A record by its bridge id. Needs `records:read`; PHI masked without `phi:read`.",
            responses=responses(401, 403, 404, 422))
def get_record(
    type_: TypePath,
    id: Annotated[int, Path(ge=1, le=2**63 - 1, description="the record's id")],
    client: RecordsReader,
    db: DbDep,
) -> Response:
    cls = resolve_type(type_)
    found = read_all(db, select(*COLUMNS).where(records.c.id == id, records.c.type == cls.record_type))
    if not found:
        raise Problem(404, f"no {cls.record_type} record with id {id}", slug="not-found", title="Not found")
    return json_response(to_json(found[0], hidden_fields(cls.record_type, client)))
