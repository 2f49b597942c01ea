"""The operator console at ``/console``: server-rendered pages (Jinja2) over :mod:`bridge.ops`.

Sign-in is with an operator API key holding ``ops:read``; the key is checked
once and exchanged for a server-side session (``console_sessions``: only the
SHA-256 of the session token is stored). The session cookie is ``HttpOnly``,
``SameSite=Strict``, scoped to ``/console``, and ``Secure`` when served over
HTTPS; sessions last :data:`SESSION_TTL` and logout deletes the row.

Every POST form carries a CSRF token (OWASP "synchronizer token" pattern): the
session's token, compared in constant time; the login form, before a session
exists, uses a double-submit cookie. A request without a session is
redirected to the login page; a bad or missing token is refused with 403.
Actions need ``ops:write``; raw excerpts show patient identifiers only to
keys holding ``phi:read``.

No external network and no build step: the templates are in
``bridge/api/templates/``, one small script and stylesheet in
``bridge/api/static/``, charts are inline SVG.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy import delete, insert, select
from starlette.datastructures import UploadFile as StarletteUpload

from bridge import ops
from bridge.api.keys import Client, _client, authenticate
from bridge.api.phi import PHI_SCOPE
from bridge.api.problems import Problem
from bridge.api.routes.operators import get_jobs, get_ops, read_upload
from bridge.db import Database, utcnow
from bridge.db.tables import api_clients, console_sessions, inbound_files

__all__ = ["COOKIE", "router"]

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
STATIC = HERE / "static"

COOKIE = "bridge_session"
LOGIN_CSRF_COOKIE = "bridge_login_csrf"
SESSION_TTL = timedelta(hours=8)
PAGE = 50



@dataclass
class Session:
    client: Client
    csrf: str

    @property
    def actor(self) -> str:
        return f"console:{self.client.name}"

    @property
    def can_write(self) -> bool:
        return self.client.allows("ops:write")

    @property
    def phi(self) -> bool:
        return self.client.allows(PHI_SCOPE)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _session(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    db = _db(request)
    with db.read() as conn:
        row = conn.execute(select(console_sessions, api_clients)
                           .join(api_clients, api_clients.c.id == console_sessions.c.client_id)
                           .where(console_sessions.c.id_hash == _hash(token))).first()
    if row is None or row.expires_at < utcnow() or row.revoked_at is not None:
        return None
    client = _client(row)
    if not client.allows("ops:read"):
        return None
    return Session(client, row.csrf_token)


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse("/console/login?" + urlencode({"next": request.url.path}), status_code=303)


def _csrf_ok(sess: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(sess.csrf.encode(), str(token).encode())


def _refuse(request: Request, sess: Session | None, status: int, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "error.html", {"sess": sess, "message": message},
                                      status_code=status)


def _page(request: Request, sess: Session, name: str, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"sess": sess, "csrf": sess.csrf, **ctx})


class _Answer(Exception):
    """Raised by a console dependency to answer the request at once with ``response`` (login page, refusal)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


class _ConsoleRoute(APIRoute):
    """A console route: an :class:`_Answer` is sent as it is, an ``OpsError`` or a ``Problem`` (e.g. an
    upload past ``api.max_upload_bytes``) as the error page.

    So each page states what it needs in its signature (:data:`SignedIn`,
    :data:`FormSession`, :data:`Operator`) and calls :mod:`bridge.ops` plainly.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except _Answer as answer:
                return answer.response
            except (ops.OpsError, Problem) as exc:
                return _refuse(request, getattr(request.state, "console_session", None), exc.status, str(exc))

        return handle


def _signed_in(request: Request) -> Session:
    """The request's session; without one, the answer is the login page."""
    sess = _session(request)
    if sess is None:
        raise _Answer(_to_login(request))
    request.state.console_session = sess
    return sess


def _form_session(request: Request, sess: Annotated[Session, Depends(_signed_in)],
                  csrf: Annotated[str, Form()] = "") -> Session:
    """The session of a form POST that carries the session's CSRF token; a 403 page otherwise."""
    if not _csrf_ok(sess, csrf):
        raise _Answer(_refuse(request, sess, 403, "The form's security token is missing or wrong. Reload the page "
                                                  "and try again."))
    return sess


def _operator(request: Request, sess: Annotated[Session, Depends(_form_session)]) -> Session:
    """:func:`_form_session` of a key that may act (``ops:write``); a 403 page otherwise."""
    if not sess.can_write:
        raise _Answer(_refuse(request, sess, 403, "Your key lacks the scope ops:write that this action needs."))
    return sess


SignedIn = Annotated[Session, Depends(_signed_in)]
FormSession = Annotated[Session, Depends(_form_session)]
Operator = Annotated[Session, Depends(_operator)]

router = APIRouter(prefix="/console", include_in_schema=False, route_class=_ConsoleRoute)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


# -- static, login, logout ---------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/console", error: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    resp = templates.TemplateResponse(request, "login.html", {"sess": None, "csrf": token, "next": _safe_next(next),
                                                              "error": error},
                                      status_code=401 if error else 200)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/console",
                    secure=_secure(request), max_age=3600)
    return resp


def _safe_next(value: str) -> str:
    # only a path inside the console: never an open redirect
    return value if value.startswith("/console") and not value.startswith("//") and "\\" not in value else "/console"


@router.post("/login")
def login(request: Request, key: str = Form(""), csrf: str = Form(""), next: str = Form("/console")) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf.encode()):
        return _refuse(request, None, 403, "The login form's security token is missing or wrong. Reload the "
                                           "login page and try again.")
    db = _db(request)
    client = authenticate(db, key.strip())
    if client is None or not client.allows("ops:read"):
        return login_form(request, next, error="That key is not valid for the console (it needs ops:read).")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as conn:
        conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))
        conn.execute(insert(console_sessions).values(id_hash=_hash(token), client_id=client.id,
                                                     csrf_token=secrets.token_urlsafe(32), created_at=now,
                                                     expires_at=now + SESSION_TTL))
        ops.audit(conn, f"console:{client.name}", "console.login", client.name)
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/console", secure=_secure(request),
                    max_age=int(SESSION_TTL.total_seconds()))
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return resp


@router.post("/logout")
def logout(request: Request, sess: FormSession) -> Response:
    db = _db(request)
    with db.write() as conn:
        conn.execute(delete(console_sessions).where(
            console_sessions.c.id_hash == _hash(request.cookies.get(COOKIE, ""))))
        ops.audit(conn, sess.actor, "console.logout", sess.client.name)
    resp = RedirectResponse("/console/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/console")
    return resp


# -- dashboard --------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, sess: SignedIn) -> Response:
    data = ops.dashboard(_db(request), request.app.state.settings)
    return _page(request, sess, "dashboard.html", data=data, categories=ops.CATEGORIES)


@router.post("/replay")
def replay(request: Request, sess: Operator, destination: str = Form(...), reason: str = Form("")) -> Response:
    if destination not in request.app.state.settings.destinations:
        return _refuse(request, sess, 404, "No such destination is configured.")
    from outbox import relay

    n = relay.replay(_db(request), destination, actor=sess.actor, reason=reason or None)
    return RedirectResponse("/console?" + urlencode({"notice": f"{n} dead letters of {destination} replayed"}),
                            status_code=303)


# -- failures -------------------------------------------------------------------------------


def _filter(params: Any) -> tuple[ops.FailureFilter, dict[str, str]]:
    keep = {k: str(params.get(k) or "") for k in ("channel", "category", "partner", "status", "hours")}
    since = None
    if keep["hours"]:
        try:
            since = utcnow() - timedelta(hours=float(keep["hours"]))
        except ValueError:
            keep["hours"] = ""
    category = keep["category"] if keep["category"] in ops.CATEGORIES else None
    status = keep["status"] if keep["status"] in ("open", "resolved", "ignored", "all") else "open"
    keep["status"] = status
    return ops.FailureFilter(channel=keep["channel"] or None, category=category, partner=keep["partner"] or None,
                             status=status, since=since), keep


@router.get("/failures", response_class=HTMLResponse)
def failures_page(request: Request, sess: SignedIn) -> Response:
    flt, keep = _filter(request.query_params)
    before = request.query_params.get("before")
    before_id = int(before) if before and before.isdigit() else None
    db = _db(request)
    rows = ops.list_failures(db, flt, before_id=before_id, limit=PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    ctx = get_ops(request)
    items = []
    for r in rows:
        pos = _json(r.position)
        where = [f"message {r.message_index}" if r.message_index >= 0 else "whole file"]
        where += [f"{k.replace('_', ' ')} {pos[k]}" for k in ("line", "segment", "segment_index", "field", "control")
                  if pos.get(k) is not None]
        ex = _excerpt(ctx, r.channel, r, pos, sess.phi)
        items.append({"row": r, "where": ", ".join(where),
                      "lines": [("hit" if hit else "", f"{no:>5}  {text}") for no, text, hit in ex["lines"]]})
    query = urlencode({k: v for k, v in keep.items() if v})
    return _page(request, sess, "failures.html", items=items, keep=keep, categories=ops.CATEGORIES,
                 channels=sorted(request.app.state.settings.channels), back=f"{request.url.path}?{query}",
                 next_before=rows[-1].id if more else None, query=query)


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _excerpt(ctx: ops.OpsContext, channel: str, unit: Any, pos: dict[str, Any], phi: bool) -> dict[str, Any]:
    delimiter = ","
    ch = ctx.channels.get(channel)
    if ch is not None:
        delimiter = getattr(getattr(ch.parser, "config", None), "delimiter", ",") or ","
    return ops.excerpt(ctx.archive, unit, pos, phi=phi, delimiter=delimiter)


@router.post("/failures/{failure_id}/reprocess")
def reprocess_one(request: Request, sess: Operator, failure_id: int, back: str = Form("")) -> Response:
    s = ops.reprocess_one(get_ops(request), failure_id, actor=sess.actor)
    notice = f"failure {failure_id}: " + ("resolved" if s.resolved else "failed again" if s.failed_again else
                                          "busy in another process")
    return _back(back, notice)


def _back(back: str, notice: str) -> RedirectResponse:
    target = back if back.startswith("/console") and not back.startswith("//") else "/console/failures"
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{sep}{urlencode({'notice': notice})}", status_code=303)


@router.post("/failures/{failure_id}/status")
def set_status(request: Request, sess: Operator, failure_id: int, status: str = Form(...), reason: str = Form(""),
               back: str = Form("")) -> Response:
    ops.set_failure_status(_db(request), failure_id, status, actor=sess.actor, reason=reason)
    return _back(back, f"failure {failure_id} {status}")


@router.post("/failures/reprocess")
def reprocess_matching(request: Request, sess: Operator, channel: str = Form(""), category: str = Form(""),
                       partner: str = Form(""), hours: str = Form(""), reason: str = Form("")) -> Response:
    flt, keep = _filter({"channel": channel, "category": category, "partner": partner, "hours": hours,
                         "status": "open"})
    job = ops.start_reprocess_job(get_ops(request), get_jobs(request), flt.conditions(), actor=sess.actor,
                                  reason=reason or None, details={"filter": keep})
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, sess: SignedIn, job_id: str) -> Response:
    job = get_jobs(request).get(job_id)
    if job is None:
        return _refuse(request, sess, 404, "No such job in this process (jobs are kept in memory).")
    return _page(request, sess, "job.html", job=job.as_dict())


@router.get("/jobs/{job_id}/progress")
def job_json(request: Request, job_id: str) -> Response:
    sess = _session(request)
    if sess is None:
        return JSONResponse({"error": "no session"}, status_code=401)
    job = get_jobs(request).get(job_id)
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return Response(orjson.dumps(job.as_dict(), default=str), media_type="application/json")


@router.post("/jobs/{job_id}/cancel")
def job_cancel(request: Request, sess: Operator, job_id: str) -> Response:
    if get_jobs(request).cancel(job_id) is None:
        return _refuse(request, sess, 404, "No such job in this process.")
    with _db(request).write() as conn:
        ops.audit(conn, sess.actor, "jobs.cancel", job_id)
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


# -- edit and resubmit -------------------------------------------------------------------------


@router.get("/inbound/{inbound_id}/resubmit", response_class=HTMLResponse)
def resubmit_form(request: Request, sess: SignedIn, inbound_id: int) -> Response:
    t = ops.trace(_db(request), inbound_id)
    content = None
    f = t["file"]
    if sess.phi and f.size <= 1024 * 1024:
        # the raw file holds patient data: only a phi:read key may edit it in the browser
        with get_ops(request).archive.open_landed(f) as fh:
            content = fh.read().decode("utf-8", "replace")
    return _page(request, sess, "resubmit.html", f=f, content=content, failures=t["failures"])


@router.post("/inbound/{inbound_id}/resubmit")
async def resubmit(request: Request, sess: Operator, inbound_id: int) -> Response:
    form = await request.form()
    upload = form.get("file")
    data = await read_upload(request, upload) if isinstance(upload, StarletteUpload) else b""
    if not data and form.get("content"):
        data = _restore_line_endings(get_ops(request), inbound_id, str(form.get("content")))
    out = ops.resubmit(get_ops(request), inbound_id, data, actor=sess.actor,
                       reason=str(form.get("reason") or "") or None)
    return RedirectResponse(f"/console/trace/{out['new_inbound_id']}?" + urlencode(
        {"notice": f"resubmitted as inbound file {out['new_inbound_id']}: {out['status']}"}), status_code=303)


def _restore_line_endings(ctx: ops.OpsContext, inbound_id: int, text: str) -> bytes:
    """A textarea submits CRLF line breaks (HTML spec); give the file back the original's own
    (HL7 v2 ends segments with CR alone, most exports with LF or CRLF)."""
    with ctx.db.read() as conn:
        unit = conn.execute(select(inbound_files.c.sha256, inbound_files.c.size, inbound_files.c.pack,
                                   inbound_files.c.pack_offset).where(inbound_files.c.id == inbound_id)).first()
    eol = "\n"
    if unit is not None:
        try:
            with ctx.archive.open_landed(unit) as fh:
                head = fh.read(64 * 1024)
        except FileNotFoundError:
            head = b""
        if b"\r\n" in head:
            eol = "\r\n"
        elif b"\r" in head:
            eol = "\r"
    return text.replace("\r\n", "\n").replace("\n", eol).encode()


# -- crosswalks ----------------------------------------------------------------------------------


@router.get("/crosswalks", response_class=HTMLResponse)
def crosswalks_page(request: Request, sess: SignedIn) -> Response:
    p = request.query_params
    kind, q = p.get("kind") or "", p.get("q") or ""
    db = _db(request)
    entries = ops.crosswalk_search(db, kind or None, q or None, limit=200)
    changed = [c for c in (p.get("changed") or "").split(",") if c]
    fixes = ops.fixable_failures(db, kind, changed) if kind and changed else 0
    return _page(request, sess, "crosswalks.html", entries=entries, kind=kind, q=q, kinds=ops.CROSSWALK_KINDS,
                 missing=ops.open_master_data_keys(db, kind or None), changed=changed, fixes=fixes,
                 prefill=p.get("code") or "", prefill_kind=p.get("add_kind") or kind)


def _after_change(kind: str, out: dict[str, Any]) -> RedirectResponse:
    return RedirectResponse("/console/crosswalks?" + urlencode({"kind": kind, "changed": ",".join(out["codes"][:500]),
                                                                "notice": f"{out['count']} {kind} entries saved"}),
                            status_code=303)


@router.post("/crosswalks/add")
def crosswalk_add(request: Request, sess: Operator, kind: str = Form(...), source_code: str = Form(""),
                  target_code: str = Form(""), description: str = Form(""), reason: str = Form("")) -> Response:
    out = ops.crosswalk_add(_db(request), kind, [{"source_code": source_code.strip(),
                                                  "target_code": target_code.strip(),
                                                  "description": description.strip()}],
                            actor=sess.actor, reason=reason or None)
    return _after_change(kind, out)


@router.post("/crosswalks/import")
async def crosswalk_import(request: Request, sess: Operator) -> Response:
    form = await request.form()
    kind = str(form.get("kind") or "")
    upload = form.get("file")
    data = await read_upload(request, upload) if isinstance(upload, StarletteUpload) else b""
    out = ops.crosswalk_import(_db(request), kind, data.decode("utf-8-sig", "replace"), actor=sess.actor,
                               reason=str(form.get("reason") or "") or None,
                               where=f"upload {getattr(upload, 'filename', '')}")
    return _after_change(kind, out)


@router.post("/crosswalks/deactivate")
def crosswalk_deactivate(request: Request, sess: Operator, kind: str = Form(...), source_code: str = Form(...),
                         reason: str = Form("")) -> Response:
    ops.crosswalk_deactivate(_db(request), kind, source_code, actor=sess.actor, reason=reason or None)
    return RedirectResponse("/console/crosswalks?" + urlencode(
        {"kind": kind, "notice": f"{kind} {source_code} deactivated"}), status_code=303)


@router.post("/crosswalks/reprocess")
def crosswalk_reprocess(request: Request, sess: Operator, kind: str = Form(...), codes: str = Form(...),
                        reason: str = Form("")) -> Response:
    code_list = [c for c in codes.split(",") if c]
    job = ops.reprocess_fixed(get_ops(request), kind, code_list, actor=sess.actor, reason=reason or None,
                              jobs=get_jobs(request))
    assert isinstance(job, ops.Job)
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


# -- trace, audit --------------------------------------------------------------------------------------


@router.get("/trace/{inbound_id}", response_class=HTMLResponse)
def trace_page(request: Request, sess: SignedIn, inbound_id: int) -> Response:
    t = ops.trace(_db(request), inbound_id)
    times = [x["at"] for x in t["timeline"]]
    t0 = min(times) if times else datetime.now(UTC)
    span = max(1e-3, ((max(times) - t0).total_seconds() if times else 0.0))
    for x in t["timeline"]:
        x["x"] = round(10 + 580 * (x["at"] - t0).total_seconds() / span, 1)
    return _page(request, sess, "trace.html", t=t)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, sess: SignedIn) -> Response:
    before = request.query_params.get("before")
    rows = ops.list_audit(_db(request), action=request.query_params.get("action") or None,
                          before_id=int(before) if before and before.isdigit() else None, limit=PAGE + 1)
    return _page(request, sess, "audit.html", rows=rows[:PAGE],
                 next_before=rows[PAGE - 1].id if len(rows) > PAGE else None)
