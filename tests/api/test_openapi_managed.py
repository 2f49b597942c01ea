"""The managed API's routes are described, carry examples, and document their errors and the rate limit."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from bridge.api.app import create_app
from bridge.db import Database
from bridge.settings import Settings

MANAGED = ("/metrics", "/v1/traces/", "/v1/items/", "/v1/purchase-orders", "/v1/charges")


def test_managed_routes_are_documented_with_examples(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")  # the document needs no tables
    try:
        with TestClient(create_app(Settings.model_validate({"data_dir": str(tmp_path)}), db)) as client:
            doc = client.get("/openapi.json").json()
    finally:
        db.dispose()
    ops = [(path, method, op) for path, item in doc["paths"].items() if path.startswith(MANAGED)
           for method, op in item.items()]
    assert {(p, m) for p, m, _ in ops} >= {
        ("/metrics", "get"), ("/v1/traces/{id}", "get"), ("/v1/items/{id}/availability", "get"),
        ("/v1/purchase-orders", "post"), ("/v1/purchase-orders/{id}", "get"), ("/v1/charges", "post"),
        ("/v1/charges/{id}", "get")}
    schemas = doc["components"]["schemas"]
    for path, method, op in ops:
        assert op.get("summary") and len(op.get("description", "")) > 40, path
        assert op.get("security"), path
        assert {"401", "403", "429"} <= set(op["responses"]), (path, method)
        for code, resp in op["responses"].items():
            if code[0] in "45":
                assert list(resp["content"]) == ["application/problem+json"], (path, code)
        # an example for every input: path parameters and request bodies
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param.get("example") or param.get("examples") or param["schema"].get("examples"), (path, param)
        if "requestBody" in op:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
            assert schemas[ref].get("examples"), ref
    post = doc["paths"]["/v1/purchase-orders"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"])
    assert "/v2" in doc["info"]["description"] and "Sunset" in doc["info"]["description"]
