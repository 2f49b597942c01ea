"""The API's dependencies as ``Annotated`` aliases: the database, settings, and the authenticated client.

A client presents its key in ``X-API-Key`` or as ``Authorization: Bearer <key>``.
A route states the scope it needs with one alias (``RecordsReader``,
``EventsReader``, ``OpsReader``); :func:`current_client` checks it through
FastAPI's ``SecurityScopes``, so the scopes also appear in the OpenAPI document.
No key, a malformed, unknown or revoked key: 401 with ``WWW-Authenticate``.
A valid key without the scope: 403 naming the missing scope.

Also the cursor codec: record and listing cursors are opaque (a client must
not compute them); the event feed's cursor is the event ``seq`` itself.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from bridge.api.keys import Client, authenticate, cached_client
from bridge.api.problems import Problem
from bridge.db import Database
from bridge.logging import bind_client
from bridge.settings import Settings

__all__ = [
    "ClientDep",
    "DbDep",
    "EventsReader",
    "OpsReader",
    "RecordsReader",
    "SettingsDep",
    "current_client",
    "decode_cursor",
    "encode_cursor",
]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (`brg_...`)")
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


# The dependencies are ``async def`` so that FastAPI calls them on the event loop: a plain ``def`` dependency
# costs a hop to the thread pool and back on every request (there were three per page, about a tenth of its CPU).
# They do no I/O there, except a key lookup missing the cache, which goes to a thread.


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def current_client(
    security_scopes: SecurityScopes,
    request: Request,
    db: DbDep,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Client:
    """The client whose key the request carries, holding every scope the route asks for."""
    key = api_key or (bearer.credentials if bearer is not None else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="bridge"'}
    if not key:
        raise Problem(401, "no API key: send it in the X-API-Key header or as 'Authorization: Bearer <key>'",
                      slug="unauthenticated", title="Unauthenticated", headers=challenge)
    key = key.strip()
    client = cached_client(db, key) or await run_in_threadpool(authenticate, db, key)
    if client is None:
        # one answer for unknown, malformed and revoked keys: nothing to probe
        raise Problem(401, "the API key is not valid (unknown, malformed or revoked)",
                      slug="unauthenticated", title="Unauthenticated", headers=challenge)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:  # bridge.api.ratelimit: 429 + Retry-After when over the limit
        limiter.check(client.id, client.name, client.rate_limit_per_minute)
    bind_client(client.name)
    missing = [s for s in security_scopes.scopes if not client.allows(s)]
    if missing:
        raise Problem(403, f"this API key lacks the scope {missing[0]!r} that this route needs",
                      slug="insufficient-scope", title="Insufficient scope",
                      headers={"WWW-Authenticate": f'Bearer realm="bridge", error="insufficient_scope", '
                                                   f'scope="{" ".join(security_scopes.scopes)}"'})
    return client


ClientDep = Annotated[Client, Security(current_client)]
RecordsReader = Annotated[Client, Security(current_client, scopes=["records:read"])]
EventsReader = Annotated[Client, Security(current_client, scopes=["events:read"])]
OpsReader = Annotated[Client, Security(current_client, scopes=["ops:read"])]


def encode_cursor(kind: str, value: int) -> str:
    """An opaque cursor for keyset paging (``kind`` stops a cursor being reused on another listing)."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, token: str | None, *, param: str = "after") -> int | None:
    """The id in a cursor from :func:`encode_cursor`; a 422 naming ``param`` if it is not one of ours."""
    if token is None or token == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        got_kind, _, value = raw.partition(":")
        if got_kind != kind or not value.isdigit():
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(422, f"query parameter {param!r}: not a cursor of this listing; pass back the "
                      "next_cursor of a previous page", slug="invalid-parameter", title="Invalid parameter",
                      extra={"errors": [{"location": "query", "name": param,
                                         "message": "not a cursor of this listing"}]}) from None
