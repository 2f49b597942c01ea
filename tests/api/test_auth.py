"""Every /v1 route refuses missing, wrong, revoked and under-scoped keys; keys are stored hashed."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge.api.keys import authenticate, create_client, list_clients, revoke_client
from bridge.db import Database
from bridge.db.tables import api_clients
from tests.api.conftest import assert_problem, auth, csv_rows

#: (path, scope it needs); the ids exist after the ingest in each test
ROUTES: list[tuple[str, str]] = [
    ("/v1/records/inventory-movements", "records:read"),
    ("/v1/records/inventory-movements/1", "records:read"),
    ("/v1/events", "events:read"),
    ("/v1/inbound", "ops:read"),
    ("/v1/inbound/1", "ops:read"),
    ("/v1/failures", "ops:read"),
    ("/v1/failures/1", "ops:read"),
]

#: a key holding each scope -> the client names in conftest.SCOPE_SETS that lack it
LACKING = {
    "records:read": ["events_only", "ops_star", "charges"],
    "events:read": ["records_only", "ops_star", "charges"],
    "ops:read": ["records_only", "events_only", "phi", "charges"],
}
HOLDING = {
    "records:read": ["reader", "records_only", "admin"],
    "events:read": ["reader", "events_only", "admin"],
    "ops:read": ["reader", "ops_star", "admin"],
}


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "inventory-movements" if m.group(1) == "type" else "1", path)


def test_every_v1_route_refuses_missing_wrong_and_revoked_keys(api: TestClient, db: Database,
                                                               keys: dict[str, str]) -> None:
    # walk the app's own route table, so a route added later is covered too
    routes = [(path, method.upper()) for path, ops in api.app.openapi()["paths"].items()
              if path.startswith("/v1/") for method in ops]
    assert {p for p, _ in routes} >= {p.replace("inventory-movements", "{type}").replace("/1", "/{id}")
                                      for p, _ in ROUTES}
    revoked_key = create_client(db, "gone", ["admin"])[1]
    revoke_client(db, "gone")
    prefix = keys["admin"][:13]
    for path, method in routes:
        url = _concrete(path)
        for headers in ({}, auth("nonsense"), auth(prefix + "x" * 43), auth(revoked_key),
                        {"Authorization": f"Bearer {revoked_key}"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
            resp = api.request(method, url, headers=headers)
            body = assert_problem(resp, 401)
            assert body["type"] == "urn:bridge:problem:unauthenticated"
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert revoked_key not in resp.text


def test_scopes_are_enforced_per_route(api: TestClient, keys: dict[str, str], ingest) -> None:
    ingest(csv_rows(2) + b"2026-11-26 09:00:00,999999,1,EA,ICU,issue,\n")  # row 3 fails: unknown item
    for path, scope in ROUTES:
        for name in LACKING[scope]:
            body = assert_problem(api.get(path, headers=auth(keys[name])), 403)
            assert scope in body["detail"]
        for name in HOLDING[scope]:
            resp = api.get(path, headers=auth(keys[name]))
            assert resp.status_code == 200, (path, name, resp.text)
            # the same key as a bearer token
            assert api.get(path, headers={"Authorization": f"Bearer {keys[name]}"}).status_code == 200


def test_key_is_shown_once_and_stored_hashed(db: Database) -> None:
    client_id, key = create_client(db, "erp", ["records:read", "events:read"], rate_limit_per_minute=600)
    assert re.fullmatch(r"brg_[a-z0-9]{8}_[A-Za-z0-9_-]{32,}", key)
    with db.read() as conn:
        row = conn.execute(select(api_clients).where(api_clients.c.id == client_id)).one()
    assert key not in " ".join(str(v) for v in row)
    assert row.key_prefix == key.split("_")[1]
    assert len(row.key_hash) == 64
    client = authenticate(db, key)
    assert client is not None and client.name == "erp" and client.rate_limit_per_minute == 600
    assert client.scopes == {"records:read", "events:read"}
    # one character off is refused
    assert authenticate(db, key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_last_used_is_recorded_and_throttled(db: Database) -> None:
    _, key = create_client(db, "erp", ["records:read"])
    assert list_clients(db)[0].last_used_at is None
    assert authenticate(db, key) is not None
    first = list_clients(db)[0].last_used_at
    assert first is not None
    assert authenticate(db, key) is not None
    # within the throttle window the second use does not write again
    assert list_clients(db)[0].last_used_at == first


def test_revoke_is_immediate_and_listed(api: TestClient, db: Database) -> None:
    _, key = create_client(db, "erp", ["records:read"])
    assert api.get("/v1/records/items", headers=auth(key)).status_code == 200
    revoke_client(db, "erp")
    assert_problem(api.get("/v1/records/items", headers=auth(key)), 401)
    (client,) = list_clients(db)
    assert client.revoked and client.revoked_at is not None


def test_client_errors_are_specific(db: Database) -> None:
    from bridge.api.keys import ClientError

    create_client(db, "erp", ["records:read"])
    with pytest.raises(ClientError, match="already exists"):
        create_client(db, "erp", ["records:read"])
    with pytest.raises(ClientError, match="unknown scope 'records:write'"):
        create_client(db, "other", ["records:write"])
    with pytest.raises(ClientError, match="no client named 'nobody'"):
        revoke_client(db, "nobody")


def test_healthz_needs_no_key(api: TestClient, db: Database) -> None:
    resp = api.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.json()["database"] == db.dialect
