"""``Idempotency-Key`` for the API's POSTs (IETF draft-ietf-httpapi-idempotency-key-header).

A client sends a key (1 to 255 characters of letters, digits and ``. _ : -``)
with a POST. The first request with that key is executed, and its status and
body are stored in ``idempotency_keys`` *in the same transaction* as what it
wrote, keyed by (client, key) with the SHA-256 of the request body in canonical
JSON (sorted keys, so whitespace and key order do not matter). Afterwards:

- the same key with the same body returns the stored response again (same
  status, same body, header ``Idempotent-Replayed: true``) and writes nothing;
- the same key with a different body is a problem 422
  (``idempotency-key-reused``), as the draft advises: the client has a bug.

Two concurrent requests with one key: on SQLite the writers queue on the
database lock, so the second finds the first's row; on PostgreSQL the second
insert waits for the first transaction and then fails on the primary key, and
:func:`lookup` is asked again, so it too answers with the stored response.
Keys are per client: two clients may use the same key.

:func:`create_once` is that whole flow for a route: it runs the route's
``create`` in the write transaction, remembers or replays, and answers 201
with a ``Location`` (a replay carries the same one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Connection, exc, insert, select

from bridge.api.problems import Problem
from bridge.db import Database, utcnow
from bridge.db.tables import idempotency_keys

__all__ = ["IdempotencyKey", "create_once", "lookup", "remember", "replayed", "request_hash"]

IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$",
    description="a key unique to this operation (a UUID is a good choice); a retry with the same key and body "
                "returns the first response and creates nothing new",
    examples=["6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"])]


def request_hash(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def lookup(conn: Connection, client_id: int, key: str, digest: str) -> tuple[int, Any] | None:
    """The stored (status, body) for ``key``, None if unused; a problem 422 if it was used with another body."""
    row = conn.execute(select(idempotency_keys).where(idempotency_keys.c.client_id == client_id,
                                                      idempotency_keys.c.key == key)).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise Problem(422, "this Idempotency-Key was already used with a different request body; use a new key "
                      "for a new operation", slug="idempotency-key-reused", title="Idempotency key reused",
                      extra={"errors": [{"location": "header", "name": "Idempotency-Key",
                                         "message": "already used with a different body"}]})
    return row.status_code, orjson.loads(row.response)


def remember(conn: Connection, client_id: int, key: str, digest: str, status: int, body: Any) -> None:
    conn.execute(insert(idempotency_keys), {"client_id": client_id, "key": key, "request_hash": digest,
                                            "status_code": status, "response": orjson.dumps(body).decode(),
                                            "created_at": utcnow()})


def replayed(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "Idempotent-Replayed": "true"})


def create_once(db: Database, client_id: int, key: str | None, body: BaseModel,
                create: Callable[[Connection], dict[str, Any]], *, collection: str, conflict: Problem) -> JSONResponse:
    """Run ``create`` (which returns the new resource as JSON, with its ``id``) once per ``key``; answer 201.

    ``key`` None: no idempotency, ``create`` runs every time. The 201 carries
    ``Location: <collection>/<id>``, and so does a replay. An integrity error
    (a concurrent request committed the same key or the same natural key
    first) replays that request's answer when it had this key, and is
    ``conflict`` otherwise.
    """
    digest = request_hash(body.model_dump(mode="json"))

    def answer(status: int, content: dict[str, Any], *, replay: bool) -> JSONResponse:
        headers = {"Location": f"{collection}/{content.get('id')}"}
        return replayed(status, content, headers) if replay else JSONResponse(content, status, headers)

    try:
        with db.write() as conn:
            hit = lookup(conn, client_id, key, digest) if key is not None else None
            if hit is not None:
                return answer(*hit, replay=True)
            content = create(conn)
            if key is not None:
                remember(conn, client_id, key, digest, 201, content)
    except exc.IntegrityError:
        if key is not None:
            with db.read() as conn:
                hit = lookup(conn, client_id, key, digest)
            if hit is not None:
                return answer(*hit, replay=True)
        raise conflict from None
    return answer(201, content, replay=False)
