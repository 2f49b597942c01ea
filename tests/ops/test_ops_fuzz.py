"""schemathesis over the operator routes (failure actions, jobs, resubmit, crosswalks, audit): no 5xx, schema holds."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from bridge.api.keys import create_client
from bridge.db import Database
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

        @hsettings(max_examples=10, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": key},
                                   excluded_checks=[schemathesis.checks.positive_data_acceptance])

        try:
            check()
        except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - report every operation's failures
            failures.append(f"{operation.method.upper()} {operation.path}: {str(e)[:1500]}")
    assert not failures, "\n\n".join(failures)
