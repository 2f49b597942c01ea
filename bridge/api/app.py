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

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI

from bridge.api import console, problems
from bridge.api.context import RequestContextMiddleware, RouteTemplates
from bridge.api.metrics import Metrics
from bridge.api.ratelimit import BucketTable, RateLimiter
from bridge.api.routes import charges as charges_route
from bridge.api.routes import crosswalks as crosswalks_route
from bridge.api.routes import cxml, destinations, events, failures, health, inbound, records
from bridge.api.routes import items as items_route
from bridge.api.routes import metrics as metrics_route
from bridge.api.routes import operators as operators_route
from bridge.api.routes import purchase_orders as purchase_orders_route
from bridge.api.routes import traces as traces_route
from bridge.db import Database
from bridge.db.async_reads import AsyncReader
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

Each client has a rate limit (requests per minute, a token bucket per client,
shared by the API workers of one bridge process): over it, a 429 with `Retry-After`. Send
`X-Correlation-ID` (1-64 of `A-Z a-z 0-9 . _ : -`) to tie your calls to what
they cause: it is returned, logged, stamped on the records and events a POST
writes, and `GET /v1/traces/{id}` follows it. Every response carries
`X-Request-ID` too. POSTs that create take an `Idempotency-Key`.

Versioning: everything is under `/v1`. A breaking change goes to `/v2`; `/v1`
keeps working and announces its end with `Deprecation` and `Sunset` headers
(RFC 9745, RFC 8594) for at least one release before it is removed. Adding
fields, routes or optional parameters is not breaking: clients must ignore
fields they do not know.
"""


def create_app(settings: Settings, db: Database, runtime: Any = None, *,
               rate_buckets: BucketTable | None = None) -> FastAPI:
    """Build the API for ``settings`` over ``db``; ``runtime`` (optional) feeds ``/healthz``.

    ``rate_buckets``: the rate limiter's table, when it is shared with other
    worker processes (:mod:`bridge.api.server`); by default this app's own.
    """
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the hot pages' reads from the event loop (PostgreSQL); without it they go to a worker thread
        reader = AsyncReader(db, size=db.pool_size) if db.is_postgres else None
        if reader is not None:
            await reader.open()
        app.state.reader = reader
        try:
            yield
        finally:
            app.state.reader = None
            if reader is not None:
                await reader.close()

    app = FastAPI(
        lifespan=lifespan,
        title="bridge",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "records", "description": "canonical records by type"},
            {"name": "events", "description": "the outbox event feed"},
            {"name": "operations", "description": "inbound files and failures"},
            {"name": "health", "description": "liveness"},
            {"name": "purchase orders", "description": "POs sent to vendors as X12 850, with their status timeline"},
            {"name": "charges", "description": "charges sent to the billing engine as HL7 DFT^P03"},
        ],
    )
    app.state.settings = settings
    app.state.db = db
    app.state.runtime = runtime
    app.state.reader = None
    problems.install(app)
    # managed API (issue 8): per-client token buckets, request/correlation ids, Prometheus metrics
    app.state.rate_limiter = RateLimiter(settings.api.rate_limit_per_minute, buckets=rate_buckets)
    app.state.metrics = Metrics(db)
    app.add_middleware(RequestContextMiddleware, templates=RouteTemplates(lambda: app.openapi()["paths"]),
                       metrics=app.state.metrics)  # outermost: ids on every response
    # routes are matched in order: the paged reads that carry the load first (no two routers share a path)
    v1 = APIRouter(prefix=f"/{API_VERSION}")
    for module in (records, events, inbound, failures, destinations, cxml):
        v1.include_router(module.router)
    v1.include_router(operators_route.router)  # issue 9: operator actions, jobs, audit
    v1.include_router(crosswalks_route.router)  # issue 9: crosswalks
    app.include_router(v1)
    app.include_router(metrics_route.router)
    app.include_router(traces_route.router, prefix=f"/{API_VERSION}")
    app.include_router(items_route.router, prefix=f"/{API_VERSION}")
    app.include_router(purchase_orders_route.router, prefix=f"/{API_VERSION}")
    app.include_router(charges_route.router, prefix=f"/{API_VERSION}")
    app.include_router(health.router)
    app.include_router(console.router)  # issue 9: operator console at /console
    return app
