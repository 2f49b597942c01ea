"""``/v1/records``: canonical records by type, keyset-paged, PHI masked without ``phi:read``.

The type in the URL is the record type in URL form (``inventory-movements``,
``items``, ``purchase-orders``), resolved by :func:`mappings.canonical.record_class`.

Paging is keyset on ``records.id`` with an opaque cursor, so a page costs the
same at any depth and rows added while a client pages never make it repeat or
skip a row that existed when it started. A record inserted by a transaction
that commits after a later id was already read can fall behind the cursor:
this listing is a snapshot walk, and the event feed (``/v1/events``, whose
cursor is commit-ordered) is the way to follow changes.

Responses are serialised here with orjson and returned as a ``Response``, so
FastAPI does not validate them again; ``response_model`` still documents them
in OpenAPI. The stored JSON text of ``data`` is still parsed on every read
(orjson, microseconds a row): splicing it in unparsed would turn a corrupt
row into a malformed 200 carrying its content instead of a generic 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from bridge.api.deps import DbDep, RecordsReader, SettingsDep, decode_cursor, encode_cursor
from bridge.api.phi import PHI_SCOPE, mask_record
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


def to_public(row: Any, client: Any) -> RecordPublic:
    data = mask_record(row.type, orjson.loads(row.data), client)
    return RecordPublic(id=row.id, type=row.type, natural_key=row.natural_key, version=row.version, data=data,
                        inbound_id=row.inbound_id, message_index=row.message_index,
                        correlation_id=row.correlation_id, created_at=row.created_at, updated_at=row.updated_at)


def to_json(row: Any, client: Any, mask: bool) -> dict[str, Any]:
    """:class:`RecordPublic` of ``row`` as a dict for orjson; ``mask``: the PHI fields must be masked."""
    data = orjson.loads(row.data)
    if not isinstance(data, dict):
        raise TypeError(f"record {row.id}: stored data is not a JSON object")
    if mask:
        data = mask_record(row.type, data, client)
    return {"id": row.id, "type": row.type, "natural_key": row.natural_key, "version": row.version, "data": data,
            "inbound_id": row.inbound_id, "message_index": row.message_index,
            "correlation_id": row.correlation_id, "created_at": row.created_at, "updated_at": row.updated_at}


def json_response(content: Any) -> Response:
    """``content`` as JSON (UTC as ``Z``, as pydantic writes it), bypassing FastAPI's response validation."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")


def must_mask(cls: type[CanonicalRecord], client: Any) -> bool:
    return bool(cls.phi_fields) and not client.allows(PHI_SCOPE)


TypePath = Annotated[str, Path(alias="type", description="record type in URL form", examples=["inventory-movements"])]


@router.get("/{type}", response_model=RecordPagePublic, summary="List records of a type",
            description="Records of one canonical type in id order, keyset-paged: pass the previous page's "
                        "`next_cursor` as `after`. `updated_since` keeps records changed at or after that "
                        "instant. Needs `records:read`; PHI fields are masked unless the key has `phi:read`.",
            responses=responses(401, 403, 404, 422))
def list_records(
    type_: TypePath,
    client: RecordsReader,
    db: DbDep,
    settings: SettingsDep,
    after: Annotated[str | None, Query(description="cursor from a previous page's next_cursor")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="page size (default from api config)")] = None,
    updated_since: Annotated[AwareDatetime | None, Query(description="ISO 8601 with offset")] = None,
) -> Response:
    cls = resolve_type(type_)
    after_id = decode_cursor(CURSOR_KIND, after)
    size = limit or settings.api.default_page_size
    q = select(records).where(records.c.type == cls.record_type)
    if after_id is not None:
        q = q.where(records.c.id > after_id)
    if updated_since is not None:
        q = q.where(records.c.updated_at >= updated_since)
    q = q.order_by(records.c.id).limit(size + 1)
    with db.read() as conn:
        rows = conn.execute(q).all()
    more = len(rows) > size
    rows = rows[:size]
    mask = must_mask(cls, client)
    return json_response({"items": [to_json(r, client, mask) for r in rows],
                          "next_cursor": encode_cursor(CURSOR_KIND, rows[-1].id) if more else None})


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
    with db.read() as conn:
        row = conn.execute(select(records).where(records.c.id == id, records.c.type == cls.record_type)).first()
    if row is None:
        raise Problem(404, f"no {cls.record_type} record with id {id}", slug="not-found", title="Not found")
    return json_response(to_json(row, client, must_mask(cls, client)))
