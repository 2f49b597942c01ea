"""The FastAPI application: routers under ``/v1``, problem+json errors, keys with scopes.

:func:`create_app` is what ``bridge run`` serves (with uvicorn) and what the
tests drive (with ``TestClient``). It holds no global state: the settings, the
database and the running :class:`~bridge.runtime.Runtime` (``None`` in tests;
only ``/healthz`` looks at it) live on ``app.state``.

Versioning: every resource is under ``/v1``. A breaking change goes to
``/v2``; ``/v1`` then keeps working and announces its end with ``Deprecation``
and ``Sunset`` headers (RFC 9745, RFC 8594) for at least one release.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from bridge.api import problems
from bridge.api.routes import cxml, events, failures, health, inbound, records
from bridge.db import Database
from bridge.settings import Settings

__all__ = ["API_VERSION", "create_app"]

API_VERSION = "v1"

DESCRIPTION = """\
bridge serves the canonical records, the event feed and the operations view of
legacy healthcare interfaces (files, HL7 v2, X12, CSV, XML).

Authenticate with an API key (`bridge clients add NAME --scopes ...` prints it
once) in the `X-API-Key` header or as `Authorization: Bearer <key>`. Each
route names the scope it needs. Fields holding patient identifiers are masked
(`***`) unless the key has `phi:read`.

Every error is `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings, db: Database, runtime: Any = None) -> FastAPI:
    """Build the API for ``settings`` over ``db``; ``runtime`` (optional) feeds ``/healthz``."""
    app = FastAPI(
        title="bridge",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "records", "description": "canonical records by type"},
            {"name": "events", "description": "the outbox event feed"},
            {"name": "operations", "description": "inbound files and failures"},
            {"name": "health", "description": "liveness"},
        ],
    )
    app.state.settings = settings
    app.state.db = db
    app.state.runtime = runtime
    problems.install(app)

    v1 = APIRouter(prefix=f"/{API_VERSION}")
    for module in (records, events, inbound, failures, cxml):
        v1.include_router(module.router)
    app.include_router(health.router)
    app.include_router(v1)
    return app
