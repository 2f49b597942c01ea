"""Errors are application/problem+json; a 500 says nothing about the exception behind it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import insert

from bridge.api.app import create_app
from bridge.db import Database, utcnow
from bridge.db.tables import records
from bridge.errors import MasterDataError, Position, StorageError
from bridge.settings import Settings
from tests.api.conftest import assert_problem, auth

SECRET = "Doe^Jane MRN 0042-SYNTHETIC"


def test_unknown_route_and_method(api: TestClient, keys: dict[str, str]) -> None:
    body = assert_problem(api.get("/v2/records/items", headers=auth(keys["reader"])), 404)
    assert "/v1" in body["detail"]
    assert_problem(api.delete("/v1/events", headers=auth(keys["reader"])), 405)


def test_validation_names_the_parameter(api: TestClient, keys: dict[str, str]) -> None:
    body = assert_problem(api.get("/v1/records/items", params={"limit": 5000}, headers=auth(keys["reader"])), 422)
    assert body["errors"] == [{"location": "query", "name": "limit",
                               "message": "Input should be less than or equal to 1000"}]
    assert "'limit'" in body["detail"]
    body = assert_problem(api.get("/v1/records/items/abc", headers=auth(keys["reader"])), 422)
    assert body["errors"][0]["location"] == "path" and body["errors"][0]["name"] == "id"
    # the detail does not echo the value sent (it may be PHI); only ``instance`` holds the path asked for
    body = assert_problem(api.get("/v1/inbound/" + SECRET, headers=auth(keys["reader"])), 422)
    assert "SYNTHETIC" not in body["detail"] + str(body["errors"])


def test_bad_cursor_is_a_422_on_after(api: TestClient, keys: dict[str, str]) -> None:
    for bad in ("garbage!", "cmVjOjE", "aW46MQ"):  # not base64; a records cursor on inbound; inbound on records
        url = "/v1/inbound" if bad == "cmVjOjE" else "/v1/records/items"
        body = assert_problem(api.get(url, params={"after": bad}, headers=auth(keys["admin"])), 422)
        assert body["errors"][0]["name"] == "after"


def test_corrupt_row_is_a_generic_500(api: TestClient, db: Database, keys: dict[str, str]) -> None:
    now = utcnow()
    with db.write() as conn:
        rid = conn.execute(insert(records).returning(records.c.id), {
            "type": "item", "natural_key": "x", "data": '{"mrn": "' + SECRET, "content_hash": "0" * 40,
            "created_at": now, "updated_at": now}).scalar_one()
    for url in (f"/v1/records/items/{rid}", "/v1/records/items"):  # one record, and a page holding it
        resp = api.get(url, headers=auth(keys["reader"]))
        body = assert_problem(resp, 500)
        assert body["type"] == "urn:bridge:problem:internal"
        assert "SYNTHETIC" not in resp.text and "Traceback" not in resp.text and "JSON" not in resp.text


def test_unexpected_exceptions_and_bridge_errors(db: Database, tmp_path) -> None:
    app = create_app(Settings.model_validate({"data_dir": str(tmp_path / "var")}), db)

    def boom() -> None:
        raise RuntimeError(f"while handling {SECRET}")

    def storage() -> None:
        raise StorageError(f"database write failed: could not connect to 10.0.0.5 {SECRET}")

    def master() -> None:
        raise MasterDataError("no active item crosswalk entry for '999999'", Position(file="a.csv", line=3),
                              kind="item", key="999999")

    app.add_api_route("/v1/test/boom", boom)
    app.add_api_route("/v1/test/storage", storage)
    app.add_api_route("/v1/test/master", master)
    with TestClient(app) as client:
        resp = client.get("/v1/test/boom")
        assert_problem(resp, 500)
        assert "SYNTHETIC" not in resp.text and "RuntimeError" not in resp.text
        resp = client.get("/v1/test/storage")
        assert assert_problem(resp, 503)["type"] == "urn:bridge:problem:storage-unavailable"
        assert "SYNTHETIC" not in resp.text and "10.0.0.5" not in resp.text
        body = assert_problem(client.get("/v1/test/master"), 422)
        assert "'999999'" in body["detail"] and "line 3" in body["detail"]


def test_healthz_reports_an_unreachable_database_as_503(tmp_path) -> None:
    # nothing listens on port 1: the connection is refused at once
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    app = create_app(Settings.model_validate({"data_dir": str(tmp_path / "var")}), down)
    try:
        with TestClient(app) as client:
            resp = client.get("/healthz")
            assert assert_problem(resp, 503)["type"] == "urn:bridge:problem:storage-unavailable"
            assert "127.0.0.1" not in resp.text
    finally:
        down.dispose()


def test_healthz_names_the_runtime_channels(db: Database, tmp_path) -> None:
    from types import SimpleNamespace

    runtime = SimpleNamespace(channels={"cabinets": object(), "items": object()})
    app = create_app(Settings.model_validate({"data_dir": str(tmp_path / "var")}), db, runtime)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok", "database": db.dialect,
                                                 "channels": ["cabinets", "items"]}
