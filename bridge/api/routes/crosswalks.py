"""``/v1/crosswalks``: master-data code maps (search, add, deactivate, CSV import) and what a change fixes.

Reading needs ``ops:read``, changing ``ops:write`` (audited by :mod:`bridge.ops`).
Every change answers with ``fixes``: how many open ``master_data`` failures
name one of the changed codes, and ``POST /v1/crosswalks/{kind}/reprocess``
re-runs exactly those as a job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from bridge import ops
from bridge.api.deps import DbDep, OpsReader
from bridge.api.problems import Problem, responses
from bridge.api.routes.operators import (
    NO_NUL,
    JobPublic,
    OpsWriter,
    get_jobs,
    get_ops,
    raise_problem,
    read_upload,
)

__all__ = ["router"]

router = APIRouter(prefix="/crosswalks", tags=["operations"])

Code = Annotated[str, Field(min_length=1, pattern=NO_NUL, max_length=255)]
KindPath = Annotated[str, Path(max_length=64, pattern=r"^[a-z][a-z0-9_]*$", examples=["item"])]


class CrosswalkPublic(BaseModel):
    id: int
    kind: str
    source_code: str
    target_code: str
    description: str
    active: bool
    updated_at: datetime
    updated_by: str | None


class CrosswalkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_code: str = Field(min_length=1, pattern=NO_NUL, max_length=255, examples=["999999"])
    target_code: str = Field(min_length=1, pattern=NO_NUL, max_length=255, examples=["ERP-SUT-0099"])
    description: str = Field("", pattern=NO_NUL, max_length=1024)
    active: bool = True
    reason: str | None = Field(None, pattern=NO_NUL, max_length=2000)


class ChangePublic(BaseModel):
    kind: str
    count: int = Field(description="entries inserted or updated")
    fixes: int = Field(description="open master_data failures these codes fix")
    codes: list[str]


class FixCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codes: list[Code] = Field(min_length=1, max_length=10_000)
    reason: str | None = Field(None, pattern=NO_NUL, max_length=2000)


@router.get("", response_model=list[CrosswalkPublic], summary="Search crosswalks",
            description="By kind and text (source, target, description). Needs `ops:read`.",
            responses=responses(401, 403, 422))
def search(client: OpsReader, db: DbDep,
           kind: Annotated[str | None, Query(pattern=NO_NUL, max_length=64)] = None,
           q: Annotated[str | None, Query(pattern=NO_NUL, max_length=255)] = None,
           active: bool | None = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[CrosswalkPublic]:
    return [CrosswalkPublic.model_validate(r, from_attributes=True)
            for r in ops.crosswalk_search(db, kind, q, active=active, limit=limit)]


@router.post("/{kind}", response_model=ChangePublic, status_code=201, summary="Add or update an entry",
             description="Needs `ops:write`.", responses=responses(401, 403, 422))
def add(kind: KindPath, client: OpsWriter, db: DbDep, body: CrosswalkCreate) -> ChangePublic:
    entry = body.model_dump(exclude={"reason"})
    try:
        out = ops.crosswalk_add(db, kind, [entry], actor=f"api:{client.name}", reason=body.reason)
    except ops.OpsError as exc:
        raise raise_problem(exc) from None
    return ChangePublic(**out)


@router.delete("/{kind}/{source_code}", status_code=204, summary="Deactivate an entry",
               description="The entry stays (inactive); messages naming it fail as master_data. Needs `ops:write`.",
               responses=responses(401, 403, 404))
def deactivate(kind: KindPath, source_code: Annotated[str, Path(pattern=NO_NUL, max_length=255)], client: OpsWriter, db: DbDep,
               reason: Annotated[str | None, Query(pattern=NO_NUL, max_length=2000)] = None) -> None:
    try:
        ops.crosswalk_deactivate(db, kind, source_code, actor=f"api:{client.name}", reason=reason)
    except ops.OpsError as exc:
        raise raise_problem(exc) from None


@router.post("/{kind}/import", response_model=ChangePublic, summary="Bulk import a CSV",
             description="Multipart field `file`: `source_code,target_code[,description][,active]`. "
                         "Needs `ops:write`.", responses=responses(401, 403, 413, 422))
async def import_csv(request: Request, kind: KindPath, client: OpsWriter, db: DbDep, file: UploadFile,
                     reason: Annotated[str | None, Query(pattern=NO_NUL, max_length=2000)] = None) -> ChangePublic:
    data = await read_upload(request, file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Problem(422, "the CSV is not UTF-8", slug="invalid-parameter") from None
    try:
        out = ops.crosswalk_import(db, kind, text, actor=f"api:{client.name}", reason=reason,
                                   where=f"upload {file.filename or ''}".strip())
    except ops.OpsError as exc:
        raise raise_problem(exc) from None
    return ChangePublic(**out)


@router.get("/{kind}/fixes", summary="Failures a change fixes",
            description="How many open master_data failures of `kind` name one of `codes` (active entries). "
                        "Needs `ops:read`.", responses=responses(401, 403, 422))
def fixes(kind: KindPath, client: OpsReader, db: DbDep,
          codes: Annotated[list[Code], Query(min_length=1, max_length=1000)]) -> dict[str, int]:
    return {"fixes": ops.fixable_failures(db, kind, codes)}


@router.post("/{kind}/reprocess", response_model=JobPublic, status_code=202,
             summary="Reprocess the failures a change fixes",
             description="Starts a job re-running exactly the open master_data failures of `kind` whose key "
                         "is in `codes`. Needs `ops:write`.", responses=responses(401, 403, 422))
def reprocess_fixed(request: Request, kind: KindPath, client: OpsWriter, body: FixCreate) -> JobPublic:
    job = ops.reprocess_fixed(get_ops(request), kind, body.codes, actor=f"api:{client.name}", reason=body.reason,
                              jobs=get_jobs(request))
    assert isinstance(job, ops.Job)
    return JobPublic(**job.as_dict())
