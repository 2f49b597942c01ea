"""``POST /v1/cxml/{channel}``: a supplier network or e-procurement system posts one cXML document.

The body is landed on the channel (the durability point: raw bytes archived,
one inbound row, processed by the runtime's processors like any dropped
file), then read once by the channel's own XML parser so the sender gets the
synchronous cXML ``Response`` it expects (cXML 1.2 User's Guide, "Response"):

- ``200 OK``: landed (a re-post of the same bytes is landed as a duplicate and
  also answered 200, so a sender's retry is harmless);
- ``400``: not well-formed, refused (entities), wrong root, no request; the
  Status text names the reason and line/column, never the content. The bytes
  are still landed, so the operator sees the failure with the original;
- ``404``: no XML channel of that name; ``413``: body too large;
  ``500``: the document could not be stored (the sender should retry).

Authentication is the API key (scope ``cxml:write``), not the cXML
``SharedSecret``: an auth failure is the API's problem+json, as for every route.
"""

from __future__ import annotations

import io
import logging
from typing import Annotated

from fastapi import APIRouter, Request, Response, Security
from fastapi.concurrency import run_in_threadpool

from bridge.api.deps import DbDep, SettingsDep, current_client
from bridge.api.keys import Client
from bridge.db import Database
from bridge.errors import BridgeError, ParseError
from bridge.pipeline.land import Archive, Lander
from bridge.settings import Settings, build_component
from mappings.cxml_outbound import cxml_response

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/cxml", tags=["cxml"])

CxmlWriter = Annotated[Client, Security(current_client, scopes=["cxml:write"])]
MEDIA_TYPE = "text/xml; charset=utf-8"


def _answer(code: int, reason: str | None = None) -> Response:
    # cXML carries its status in the body; the HTTP status mirrors it for proxies and logs
    return Response(cxml_response(code, reason), status_code=code, media_type=MEDIA_TYPE)


def _verdict(settings: Settings, channel: str, body: bytes) -> ParseError | None:
    """Read the document with the channel's parser; the first parse error, or None."""
    block = settings.channels[channel].parser
    cls, config = build_component("parser", block.type, block.options(), key=f"channels.{channel}.parser")
    try:
        for message in cls(config).parse(io.BytesIO(body), name=f"{channel}.xml"):
            if message.error is not None:
                return message.error
    except ParseError as exc:
        return exc
    return None


def _accept(request: Request, db: Database, settings: Settings, channel: str, body: bytes) -> Response:
    runtime = request.app.state.runtime
    lander = getattr(runtime, "lander", None) or Lander(db, Archive(settings.archive_dir))
    try:
        landed = lander.land(channel=channel, src=io.BytesIO(body), name=f"cxml-{channel}.xml",
                             origin="api:cxml")
    except BridgeError as exc:
        log.warning("cxml landing failed", extra={"channel": channel, "error": type(exc).__name__})
        return _answer(500, "the document could not be stored; retry later")
    error = _verdict(settings, channel, body)
    if error is not None:
        return _answer(400, f"{error.reason} ({error.position.with_(file=None)})")
    log.info("cxml accepted", extra={"channel": channel, "inbound_id": landed.inbound_id})
    return _answer(200)


@router.post("/{channel}", summary="Post a cXML document",
             description="Lands one cXML document on an XML channel and answers with a cXML Response "
                         "(200 OK, 400 with the reason). Needs `cxml:write`.",
             response_class=Response,
             responses={200: {"content": {"text/xml": {}}, "description": "cXML Response, Status 200"},
                        400: {"content": {"text/xml": {}}, "description": "cXML Response, Status 400"}})
async def post_cxml(channel: str, request: Request, client: CxmlWriter, db: DbDep,
                    settings: SettingsDep) -> Response:
    config = settings.channels.get(channel)
    if config is None or config.parser.type != "xml":
        return _answer(404, f"no XML channel named {channel[:64]!r}")
    limit = settings.api.max_upload_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _answer(413, f"document larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return _answer(400, "empty body: expected one cXML document")
    return await run_in_threadpool(_accept, request, db, settings, channel, body)
