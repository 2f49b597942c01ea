"""``GET /metrics``: Prometheus text exposition, behind the ``ops:read`` scope.

Outside ``/v1``, where Prometheus expects it. It needs a key with
``ops:read`` (Prometheus sends one with ``authorization: {credentials: <key>}``
in its scrape config): the figures name channels, destinations and volumes,
which is operations data, though never PHI. What is measured is
:mod:`bridge.api.metrics`' business.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.api.deps import OpsReader
from bridge.api.problems import responses

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            description="Prometheus text format 0.0.4: API requests by route template and status (this "
                        "process), and pipeline state derived from the database (files, messages, records and "
                        "failures per channel and outcome; drop->commit and commit->delivered latency "
                        "histograms; outbox backlog and oldest age per destination), cached for a few seconds. "
                        "Needs `ops:read`.",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"},
                                                        "example": "bridge_outbox_backlog{destination=\"erp\"} 0.0\n"}},
                             "description": "the metrics"}, **responses(401, 403, 429, 503)})
def metrics(request: Request, client: OpsReader) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
