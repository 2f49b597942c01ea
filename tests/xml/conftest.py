"""Fixtures for the XML tests: a loopback HTTP canary that records every request, an in-memory crosswalk."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import SAMPLES

XML_SAMPLES = SAMPLES / "xml"


@dataclass
class Canary:
    """An HTTP server on 127.0.0.1 that answers anything and remembers that it was asked."""

    port: int
    hits: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def canary_server() -> Iterator[Canary]:
    canary = Canary(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            canary.hits.append(self.path)
            body = b'<!ENTITY leak "CANARY-CONTENT">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    canary.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield canary
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def canary(canary_server: Canary) -> Canary:
    canary_server.hits.clear()
    return canary_server


CROSSWALK = {
    "vendor": {"987654321": "V-EXMED", "AN01000000099": "V-SELF"},
    "item": {"GLV-NIT-M": "100235", "SUT-3-0-PGA": "100777"},
}
