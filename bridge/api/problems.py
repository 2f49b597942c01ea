"""Every API error as ``application/problem+json`` (RFC 9457, Problem Details for HTTP APIs).

A problem carries ``type`` (a URI naming the kind of problem: ``urn:bridge:problem:<slug>``),
``title`` (the same for every occurrence of that type), ``status``, ``detail``
(this occurrence, written for the client to act on) and ``instance`` (the
request path). Validation problems add ``errors``: each bad parameter with
where it was (``query``, ``path``, ``header``), its name and why, never the
value sent (it may be PHI).

This is the only module that turns errors into HTTP responses:

- :class:`Problem` is raised by routes and dependencies for expected outcomes
  (404, 401, 403, 422 on a bad cursor);
- :class:`~bridge.errors.BridgeError` subclasses map through :data:`BRIDGE_ERRORS`;
- Starlette's HTTP errors (unknown route, wrong method) keep their status;
- anything else is a 500 with a generic detail: no exception text and no stack
  trace ever reaches a client (:class:`CatchAllMiddleware`); the server logs
  the exception's type and path, and the traceback only at debug level,
  since an exception's text may quote patient data.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.errors import (
    BridgeError,
    ConfigError,
    DeliveryError,
    InputError,
    SourceError,
    StorageError,
)

__all__ = [
    "BRIDGE_ERRORS",
    "CatchAllMiddleware",
    "ParameterErrorPublic",
    "Problem",
    "ProblemPublic",
    "document",
    "install",
    "problem_response",
    "responses",
]

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:bridge:problem:"


class ParameterErrorPublic(BaseModel):
    """One invalid request parameter."""

    location: str = Field(description="query, path, header or body", examples=["query"])
    name: str = Field(description="the parameter's name (dotted for nested body fields)", examples=["limit"])
    message: str = Field(examples=["Input should be less than or equal to 1000"])


class ProblemPublic(BaseModel):
    """An error, as RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the kind of problem", examples=["urn:bridge:problem:not-found"])
    title: str = Field(description="short summary of the kind of problem", examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(description="what went wrong in this request", examples=["no record 42 of type item"])
    instance: str = Field(description="the request path", examples=["/v1/records/items/42"])
    errors: list[ParameterErrorPublic] | None = Field(None, description="invalid parameters (422 only)")


class Problem(Exception):
    """An expected error outcome of a request; rendered as problem+json."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        self.status = status
        phrase = HTTPStatus(status).phrase
        self.slug = slug or phrase.lower().replace(" ", "-").replace("'", "")
        self.title = title or phrase
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(detail)


#: a BridgeError subclass -> (status, slug, title); the first match in order wins
BRIDGE_ERRORS: list[tuple[type[BridgeError], int, str, str]] = [
    (InputError, 422, "invalid-input", "Invalid input"),
    (ConfigError, 500, "configuration", "Server misconfigured"),
    (StorageError, 503, "storage-unavailable", "Storage unavailable"),
    (DeliveryError, 502, "delivery-failed", "Delivery failed"),
    (SourceError, 502, "source-failed", "Upstream source failed"),
]


def problem_response(request_path: str, status: int, detail: str, *, slug: str | None = None,
                     title: str | None = None, headers: dict[str, str] | None = None,
                     extra: dict[str, Any] | None = None) -> JSONResponse:
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + (slug or phrase.lower().replace(" ", "-").replace("'", "")),
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": request_path,
    }
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request.url.path, exc.status, exc.detail, slug=exc.slug, title=exc.title,
                            headers=exc.headers, extra=exc.extra)


def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        detail = f"no route {request.url.path!r}; the API lives under /v1 (see /docs)"
    elif status == 405:
        detail = f"method {request.method} is not allowed on {request.url.path!r}"
    else:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    return problem_response(request.url.path, status, detail, headers=dict(exc.headers or {}))


def _param_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:]) or where
        out.append({"location": where, "name": name, "message": str(err.get("msg", "invalid"))})
    return out


def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # the input value is deliberately left out: it may be PHI, and the client has it anyway
    params = _param_errors(exc.errors())
    first = params[0] if params else {"location": "request", "name": "request", "message": "invalid"}
    detail = f"{first['location']} parameter {first['name']!r}: {first['message']}"
    if len(params) > 1:
        detail += f" (and {len(params) - 1} more)"
    return problem_response(request.url.path, 422, detail, slug="invalid-parameter", title="Invalid parameter",
                            extra={"errors": params})


def _on_bridge(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BridgeError)
    for cls, status, slug, title in BRIDGE_ERRORS:
        if isinstance(exc, cls):
            if status >= 500:
                # server-side errors may name hosts, paths or SQL: log them, tell the client less
                log.error("request failed", extra={"path": request.url.path, "error_type": type(exc).__name__,
                                                   "error": str(exc)})
                detail = f"{title.lower()}; the operator can find this request in the server log"
            else:
                detail = str(exc)
            return problem_response(request.url.path, status, detail, slug=slug, title=title)
    return _generic_500(request.url.path, exc, request.method)


def _generic_500(path: str, exc: BaseException, method: str) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, method, path)
    log.debug("traceback: %s", "".join(traceback.format_exception(exc)))
    return problem_response(path, 500, "an internal error occurred; the operator can find this request in the "
                            "server log", slug="internal", title="Internal server error")


class CatchAllMiddleware:
    """Turn any exception that escaped the routes into a generic problem 500.

    Starlette's own last-resort handler re-raises after responding, so the
    server would print the exception text and traceback; this one logs only the
    type (the text may carry patient data) and keeps the traceback at debug.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing escapes to the client
            if started:
                # headers are out: the connection is the only thing left to cut
                log.error("unhandled %s after the response started on %s", type(exc).__name__, scope.get("path"))
                raise
            response = _generic_500(scope.get("path", ""), exc, scope.get("method", ""))
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the problem handlers and the last-resort middleware on ``app``."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(BridgeError, _on_bridge)
    app.add_middleware(CatchAllMiddleware)
    document(app)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the problem+json bodies a route may return."""
    described = {
        401: "missing, invalid or revoked API key",
        403: "the key lacks the scope this route needs",
        404: "no such resource",
        422: "a parameter is invalid",
        503: "the database is unreachable",
    }
    return {
        s: {"model": ProblemPublic, "description": described.get(s, HTTPStatus(s).phrase)}
        for s in statuses
    }


def document(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API sends: error bodies as ``application/problem+json``.

    FastAPI files every response model under ``application/json``; this moves
    the 4xx/5xx ones (all :class:`ProblemPublic`) once, when the document is built.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for item in schema.get("paths", {}).values():
            for op in item.values():
                for code, resp in op.get("responses", {}).items():
                    content = resp.get("content", {})
                    if code[:1] in ("4", "5") and "application/json" in content:
                        resp["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemPublic"}}}
        schemas = schema.get("components", {}).get("schemas", {})
        # FastAPI's own 422 shapes are never sent: problems.py renders validation errors
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
