"""Request and correlation ids: returned on every response, validated, and in the log lines of the request."""

from __future__ import annotations

import io
import json
import logging

from fastapi.testclient import TestClient

from bridge.db import Database
from bridge.logging import JsonFormatter
from tests.api.conftest import assert_problem, auth


def test_ids_are_created_or_echoed_on_every_response(api: TestClient, keys: dict[str, str]) -> None:
    for resp in (api.get("/healthz"), api.get("/v1/records/items"), api.get("/v1/nope"),
                 api.get("/v1/records/items", headers=auth(keys["reader"]))):
        assert len(resp.headers["x-request-id"]) == 32
        assert len(resp.headers["x-correlation-id"]) == 32
    a, b = api.get("/healthz"), api.get("/healthz")
    assert a.headers["x-request-id"] != b.headers["x-request-id"]
    resp = api.get("/v1/records/items", headers={**auth(keys["reader"]), "X-Correlation-ID": "erp-batch:42.a_b"})
    assert resp.status_code == 200
    assert resp.headers["x-correlation-id"] == "erp-batch:42.a_b"


def test_unsafe_correlation_id_is_refused(api: TestClient, keys: dict[str, str]) -> None:
    for bad in ("has space", "x" * 65, "semi;colon", "<script>"):
        resp = api.get("/v1/records/items", headers={**auth(keys["reader"]), "X-Correlation-ID": bad})
        body = assert_problem(resp, 400)
        assert body["type"] == "urn:bridge:problem:invalid-correlation-id"
        assert body["errors"][0]["name"] == "X-Correlation-ID"
        assert bad not in resp.text
        assert "x-request-id" in resp.headers


def test_log_lines_carry_the_request_context(api: TestClient, db: Database, keys: dict[str, str]) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge.api.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        resp = api.get("/v1/records/items/7", headers={**auth(keys["reader"]), "X-Correlation-ID": "trace-me-1"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert resp.status_code == 404
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["correlation_id"] == "trace-me-1"
    assert line["request_id"] == resp.headers["x-request-id"]
    assert line["client"] == "reader"
    assert line["route"] == "/v1/records/{type}/{id}" and line["status"] == 404
    assert keys["reader"] not in out.getvalue()
