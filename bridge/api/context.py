"""Request and correlation ids on every API response, in the log context, and in what the request writes.

:class:`RequestContextMiddleware` (outermost, so even a 500 carries them):

- ``X-Request-ID``: a new id for every request, always generated here, returned;
- ``X-Correlation-ID``: the caller's id for a whole business flow, accepted
  when it is 1 to 64 characters of letters, digits and ``. _ : -``
  (:data:`CORRELATION_ID`; it is stored in the 64-character ``correlation_id``
  columns and logged, so nothing else gets through), otherwise a problem 400;
  absent, a new one is created. Either way it is returned.

Both are bound to the log context (:func:`bridge.logging.bind_context`) for
the request's duration; routes that write records or events put
:func:`bridge.logging.current_correlation_id` in their ``Origin``, so
``GET /v1/traces/{correlation id}`` finds them. The middleware also logs one
line per request (method, route template, status, milliseconds; never the
query string, which may hold identifiers) and feeds the request metrics
(:mod:`bridge.api.metrics`) by route template, not raw path, so ids in paths
do not explode the label space.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api.problems import problem_response
from bridge.logging import bind_context, reset_context

__all__ = ["CORRELATION_HEADER", "CORRELATION_ID", "REQUEST_HEADER", "RequestContextMiddleware", "RouteTemplates"]

log = logging.getLogger("bridge.api.access")

CORRELATION_HEADER = "X-Correlation-ID"
REQUEST_HEADER = "X-Request-ID"
#: what a caller's correlation id may look like
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_id() -> str:
    return uuid.uuid4().hex


class RouteTemplates:
    """Raw path -> the path template of the route that serves it, from the app's OpenAPI paths.

    FastAPI's nested routers no longer leave the full template in the ASGI
    scope, and the OpenAPI document is the list of routes a client can call
    anyway. Built on first use; templates with fewer parameters win (a fixed
    segment beats a ``{param}``). Answers are memoised for up to
    :attr:`MEMO_SIZE` paths (cleared when full), so a hot path costs a dict lookup.
    """

    MEMO_SIZE = 4096

    def __init__(self, paths: Callable[[], Iterable[str]]) -> None:
        self._paths = paths
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None
        self._memo: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        hit = self._memo.get(path)
        if hit is not None:
            return hit
        if self._compiled is None:
            templates = sorted(self._paths(), key=lambda t: (t.count("{"), t))
            self._compiled = [(compile_path(t)[0], t) for t in templates]
        found = next((template for regex, template in self._compiled if regex.match(path)), "unmatched")
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()
        self._memo[path] = found
        return found


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, templates: Callable[[str], str], metrics: Any = None) -> None:
        self.app = app
        self.templates = templates
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id()
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"x-correlation-id":
                given = value.decode("latin-1").strip()
                break
        ids = [(REQUEST_HEADER.encode(), request_id.encode())]
        started = time.perf_counter()
        if given is not None and not CORRELATION_ID.fullmatch(given):
            response = problem_response(
                scope.get("path", ""), 400,
                f"header {CORRELATION_HEADER!r} must be 1 to 64 letters, digits or . _ : - (or absent: "
                "bridge then creates one)", slug="invalid-correlation-id", title="Invalid correlation id",
                extra={"errors": [{"location": "header", "name": CORRELATION_HEADER,
                                   "message": "1 to 64 characters of A-Z a-z 0-9 . _ : -"}]})
            response.headers[REQUEST_HEADER] = request_id
            await response(scope, receive, send)
            self._done(scope, 400, started)
            return
        correlation_id = given or new_id()
        ids.append((CORRELATION_HEADER.encode(), correlation_id.encode()))
        status = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *ids]
            await send(message)

        token = bind_context(request_id=request_id, correlation_id=correlation_id)
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            self._done(scope, status, started)
            reset_context(token)

    def _done(self, scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        template = self.templates(scope.get("path", ""))
        method = scope.get("method", "")
        if self.metrics is not None:
            self.metrics.observe_request(method, template, status, seconds)
        log.info("request", extra={"method": method, "route": template, "status": status,
                                   "ms": round(seconds * 1000, 2)})
