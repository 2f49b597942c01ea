"""The OpenAPI document describes every route, its scope errors, and problem+json error bodies."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from bridge.api.app import create_app
from bridge.db import Database
from bridge.settings import Settings

#: the resources of the foundation API; later routers document their own errors (cXML answers in cXML)
OWN = {"records", "events", "inbound", "failures"}


def test_every_v1_operation_is_described_and_documents_its_errors(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")  # the document needs no tables
    try:
        with TestClient(create_app(Settings.model_validate({"data_dir": str(tmp_path)}), db)) as client:
            resp = client.get("/openapi.json")
    finally:
        db.dispose()
    assert resp.status_code == 200
    doc = resp.json()
    ops = [(path, op) for path, item in doc["paths"].items() if path.startswith("/v1/") for op in item.values()]
    assert len(ops) >= 7
    for path, op in ops:
        assert op.get("description"), path
        assert op.get("security"), path
        if path.split("/")[2] not in OWN:
            continue
        assert {"401", "403"} <= set(op["responses"]), path
        for code, resp in op["responses"].items():
            if code[0] in "45":
                assert list(resp["content"]) == ["application/problem+json"], (path, code)
    assert "X-API-Key" in str(doc["components"]["securitySchemes"])
