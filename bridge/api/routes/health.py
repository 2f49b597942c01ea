"""``GET /healthz``: is this process up and its database reachable (no key needed).

It answers 200 with ``{"status": "ok"}`` when a read transaction succeeds, and
a problem 503 when it does not, so a load balancer or ``systemd`` can tell.
It names the channels this process runs, never configuration values.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import text

from bridge.api.deps import DbDep
from bridge.api.problems import responses

__all__ = ["HealthPublic", "router"]

router = APIRouter(tags=["health"])


class HealthPublic(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(description="the database backend, reachable", examples=["sqlite"])
    channels: list[str] | None = Field(None, description="channels this process runs (absent without a runtime)")


@router.get("/healthz", response_model=HealthPublic, summary="Liveness and database reachability",
            description="No API key needed. 200 when the database answers a read; problem 503 otherwise.",
            responses=responses(503))
def healthz(request: Request, db: DbDep) -> HealthPublic:
    # a StorageError from here becomes a 503 problem (bridge.api.problems)
    with db.read() as conn:
        conn.execute(text("SELECT 1"))
    runtime = request.app.state.runtime
    channels = sorted(getattr(runtime, "channels", {}) or {}) if runtime is not None else None
    return HealthPublic(status="ok", database=db.dialect, channels=channels)
