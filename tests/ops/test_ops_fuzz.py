"""schemathesis over the operator routes (failure actions, jobs, resubmit, crosswalks, audit): no 5xx, schema holds."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient

from bridge.api.keys import create_client
from bridge.db import Database
from tests.helpers import fuzz_operation
from tests.ops.conftest import rows

OURS = ("/v1/failures/", "/v1/crosswalks", "/v1/jobs", "/v1/audit", "/v1/inbound/{id}/resubmit")


def test_operator_routes_hold_under_generated_requests(db: Database, api: TestClient, ingest) -> None:
    ingest(rows(["100234", "999999"]))
    _, key = create_client(db, "fuzzer", ["admin"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(OURS) or operation.path == "/v1/failures/{id}":
            continue
        failure = fuzz_operation(operation, key, examples=10, cut=1500)
        if failure:
            failures.append(failure)
    assert not failures, "\n\n".join(failures)
