"""Operator actions over HTTP: reprocess, bulk jobs, resolve/ignore, resubmit, the audit log.

Reading needs ``ops:read``; every action needs ``ops:write`` and is written to
the audit log as ``api:<client name>`` by :mod:`bridge.ops`, which does the
work (this module only shapes HTTP around it). Bulk reprocessing runs as a
job in this process's in-memory registry: ``POST /v1/failures/reprocess``
answers 202 with the job, ``GET /v1/jobs/{id}`` shows its progress and
``POST /v1/jobs/{id}/cancel`` stops it before its next file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Security, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUpload

from bridge import ops
from bridge.api.deps import DbDep, OpsReader, current_client
from bridge.api.keys import Client
from bridge.api.problems import Problem, responses
from bridge.api.routes.failures import Category

__all__ = ["NO_NUL", "OpsWriter", "get_jobs", "get_ops", "read_upload", "router"]

router = APIRouter(tags=["operations"])

OpsWriter = Annotated[Client, Security(current_client, scopes=["ops:write"])]
#: PostgreSQL text cannot hold NUL: refuse it as a 422 at the edge, not a 503 from the driver
NO_NUL = r"^[^\x00]*$"
IdPath = Annotated[int, Path(ge=1, le=2**63 - 1)]
JobIdPath = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def get_ops(request: Request) -> ops.OpsContext:
    """The app's :class:`~bridge.ops.OpsContext`, built once (from the runtime when there is one)."""
    state = request.app.state
    ctx = getattr(state, "ops", None)
    if ctx is None:
        ctx = ops.OpsContext.from_settings(state.settings, state.db, state.runtime)
        state.ops = ctx
    return ctx


def get_jobs(request: Request) -> ops.JobRegistry:
    state = request.app.state
    jobs = getattr(state, "jobs", None)
    if jobs is None:
        jobs = state.jobs = ops.JobRegistry()
    return jobs


def raise_problem(exc: ops.OpsError) -> Problem:
    slug = {404: "not-found", 409: "conflict", 422: "invalid-parameter"}.get(exc.status)
    return Problem(exc.status, str(exc), slug=slug)


async def read_upload(request: Request, file: StarletteUpload) -> bytes:
    """The uploaded bytes; a problem 413 past ``api.max_upload_bytes`` (read no further than one byte past it)."""
    limit: int = request.app.state.settings.api.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, f"the file is larger than api.max_upload_bytes ({limit})")
    return data


class ReasonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, pattern=NO_NUL, max_length=2000, examples=["item master fixed in the ERP"])


class ResolveCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, pattern=NO_NUL, max_length=2000, examples=["duplicate of a manual entry"])


class ReprocessFilterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str | None = Field(None, pattern=NO_NUL, max_length=64)
    category: Category | None = None
    partner: str | None = Field(None, pattern=NO_NUL, max_length=255, description="matches the inbound file's origin")
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = Field(None, pattern=NO_NUL, max_length=64)
    key: str | None = Field(None, pattern=NO_NUL, max_length=255)
    inbound_id: int | None = Field(None, ge=1, le=2**63 - 1)
    reason: str | None = Field(None, pattern=NO_NUL, max_length=2000)

    def to_filter(self) -> ops.FailureFilter:
        for name in ("since", "until"):
            v = getattr(self, name)
            if v is not None and v.tzinfo is None:
                raise Problem(422, f"{name!r} needs a UTC offset (e.g. 2026-01-01T00:00:00Z)",
                              slug="invalid-parameter", title="Invalid parameter")
        return ops.FailureFilter(channel=self.channel, category=self.category, partner=self.partner,
                                 since=self.since, until=self.until, kind=self.kind, key=self.key,
                                 inbound_id=self.inbound_id)


class ReprocessPublic(BaseModel):
    files: int
    messages: int
    resolved: int = Field(description="failures that now commit")
    failed_again: int
    busy: int = Field(description="files another process held; their failures stay open")
    errors: int
    cancelled: bool


class JobPublic(BaseModel):
    id: str
    kind: str
    actor: str
    status: str = Field(examples=["running"], description="running, done, cancelled, failed")
    total: int = Field(description="failed messages to re-run")
    done: int
    summary: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    error: str | None


class ResubmitPublic(BaseModel):
    inbound_id: int = Field(description="the original file (unchanged)")
    new_inbound_id: int = Field(description="the corrected version, with parent_id = inbound_id")
    status: str
    original_failures_resolved: int
    messages: int | None = None
    records: int | None = None
    failures: int | None = None


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str | None
    details: dict[str, Any]


def audit_public(row: Any) -> AuditPublic:
    return AuditPublic(id=row.id, at=row.at, actor=row.actor, action=row.action, target=row.target,
                       reason=row.reason, details=orjson.loads(row.details or "{}"))


@router.post("/failures/reprocess", status_code=202, response_model=JobPublic, summary="Reprocess by filter",
             description="Start a job re-running every open failure matching the filter. Needs `ops:write`.",
             responses=responses(401, 403, 422))
def reprocess_matching(request: Request, client: OpsWriter, body: ReprocessFilterCreate) -> JobPublic:
    flt = body.to_filter()
    job = ops.start_reprocess_job(get_ops(request), get_jobs(request), flt.conditions(),
                                  actor=f"api:{client.name}", reason=body.reason,
                                  details={"filter": flt.as_dict()})
    return JobPublic(**job.as_dict())


@router.post("/failures/{id}/reprocess", response_model=ReprocessPublic, summary="Reprocess one failure",
             description="Re-run one failed message now (idempotent). Needs `ops:write`.",
             responses=responses(401, 403, 404, 409))
def reprocess_failure(request: Request, id: IdPath, client: OpsWriter,
                      body: ReasonCreate | None = None) -> ReprocessPublic:
    try:
        s = ops.reprocess_one(get_ops(request), id, actor=f"api:{client.name}", reason=body.reason if body else None)
    except ops.OpsError as exc:
        raise raise_problem(exc) from None
    return ReprocessPublic(**s.as_dict())


def _set_status(db: Any, id: int, status: str, client: Client, body: ResolveCreate) -> dict[str, Any]:
    try:
        ops.set_failure_status(db, id, status, actor=f"api:{client.name}", reason=body.reason)
    except ops.OpsError as exc:
        raise raise_problem(exc) from None
    return {"id": id, "status": status}


@router.post("/failures/{id}/resolve", summary="Mark a failure resolved",
             description="Close an open failure with a reason (nothing is re-run). Needs `ops:write`.",
             responses=responses(401, 403, 404, 409, 422))
def resolve_failure(id: IdPath, client: OpsWriter, db: DbDep, body: ResolveCreate) -> dict[str, Any]:
    return _set_status(db, id, "resolved", client, body)


@router.post("/failures/{id}/ignore", summary="Ignore a failure",
             description="Close an open failure as ignored, with a reason. Needs `ops:write`.",
             responses=responses(401, 403, 404, 409, 422))
def ignore_failure(id: IdPath, client: OpsWriter, db: DbDep, body: ResolveCreate) -> dict[str, Any]:
    return _set_status(db, id, "ignored", client, body)


def _no_job(id: str) -> Problem:
    return Problem(404, f"no job {id!r} in this process (jobs are kept in memory)", slug="not-found")


@router.get("/jobs/{id}", response_model=JobPublic, summary="A bulk job's progress",
            description="Needs `ops:read`.", responses=responses(401, 403, 404))
def get_job(request: Request, id: JobIdPath, client: OpsReader) -> JobPublic:
    job = get_jobs(request).get(id)
    if job is None:
        raise _no_job(id)
    return JobPublic(**job.as_dict())


@router.post("/jobs/{id}/cancel", response_model=JobPublic, summary="Cancel a bulk job",
             description="Stops before the job's next file. Needs `ops:write`.", responses=responses(401, 403, 404))
def cancel_job(request: Request, id: JobIdPath, client: OpsWriter) -> JobPublic:
    job = get_jobs(request).cancel(id)
    if job is None:
        raise _no_job(id)
    with get_ops(request).db.write() as conn:
        ops.audit(conn, f"api:{client.name}", "jobs.cancel", id)
    return JobPublic(**job.as_dict())


@router.post("/inbound/{id}/resubmit", response_model=ResubmitPublic, status_code=201,
             summary="Edit and resubmit a file",
             description="Upload corrected bytes (multipart field `file`); they land as a new inbound file "
                         "linked to the original (`parent_id`), which is never changed, and are processed. "
                         "Needs `ops:write`.", responses=responses(401, 403, 404, 409, 422))
async def resubmit_file(request: Request, id: IdPath, client: OpsWriter, file: UploadFile,
                        reason: Annotated[str | None, Query(pattern=NO_NUL, max_length=2000)] = None) -> ResubmitPublic:
    data = await read_upload(request, file)
    try:
        out = ops.resubmit(get_ops(request), id, data, actor=f"api:{client.name}", reason=reason)
    except ops.OpsError as exc:
        raise raise_problem(exc) from None
    return ResubmitPublic(**{k: v for k, v in out.items() if k in ResubmitPublic.model_fields})


@router.get("/audit", response_model=list[AuditPublic], summary="The audit log",
            description="Operator actions, newest first (append-only). Needs `ops:read`.",
            responses=responses(401, 403))
def get_audit(client: OpsReader, db: DbDep,
              action: Annotated[str | None, Query(pattern=NO_NUL, max_length=64, description="e.g. failures.* ")] = None,
              actor: Annotated[str | None, Query(pattern=NO_NUL, max_length=128)] = None,
              target: Annotated[str | None, Query(pattern=NO_NUL, max_length=255)] = None,
              before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="id of the oldest row seen")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditPublic]:
    return [audit_public(r) for r in ops.list_audit(db, action=action, actor=actor, target=target,
                                                    before_id=before, limit=limit)]
