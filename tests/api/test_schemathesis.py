"""schemathesis against the live OpenAPI document: no 5xx and no response that breaks the schema.

The app is served in-process over ASGI (schemathesis drives it through
Starlette's test transport), with an admin key so every route is reached past
authentication, and a bounded number of examples per operation so the run
stays well under a minute per backend. Checks: schemathesis' defaults for
positive data (server errors, status codes the operation documents, content
types, response schemas, headers).
"""

from __future__ import annotations

from pathlib import Path

import schemathesis

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.settings import Settings
from tests.api.conftest import csv_rows
from tests.helpers import fuzz_operation

EXAMPLES = 8
#: the managed API (issue 8) and the foundation routes it builds on; asserted strictly
ASSERTED = ("/healthz", "/metrics", "/v1/records", "/v1/events", "/v1/inbound", "/v1/failures/{id}",
            "/v1/failures", "/v1/traces", "/v1/items", "/v1/purchase-orders", "/v1/charges")


def test_openapi_holds_under_generated_requests(db: Database, tmp_path: Path, ingest) -> None:
    ingest(csv_rows(3) + b"2026-11-26 09:00:00,999999,1,EA,ICU,issue,\n")
    config = Settings.model_validate({"data_dir": str(tmp_path / "var"), "api": {"rate_limit_per_minute": 100000}})
    app = create_app(config, db)
    _, key = create_client(db, "fuzzer", ["admin"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:
        if not any(operation.path == p or operation.path.startswith(p + "/") for p in ASSERTED):
            continue  # routes of other issues in flight (cxml, operators, crosswalks, destinations, console)
        if operation.path.startswith("/v1/failures/{id}/"):
            continue  # issue 9's operator actions on failures
        failure = fuzz_operation(operation, key, examples=EXAMPLES, cut=700)
        if failure:
            failures.append(failure)
    assert not failures, "\n\n".join(failures)
