"""Fixtures of the relay tests: a real HTTP receiver in a thread, RabbitMQ, event helpers.

The receiver is a ``ThreadingHTTPServer`` on 127.0.0.1 (an ephemeral port),
started once per session. Each test registers a *script* under its own path:
a function from the request number on that path to a :class:`Reply`, so a
test can say "503 three times, then 200" or "hold until released". Every
request and every 2xx answer is recorded with its event id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from bridge.db import Database
from mappings.base import EventDraft
from outbox.writer import Origin, write_events


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    #: wait on this event (up to ``hold_seconds``) before answering
    hold: threading.Event | None = None
    hold_seconds: float = 0.0
    #: drop the connection without answering
    drop: bool = False


@dataclass
class Received:
    event_id: str
    key: str
    event_type: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    def __init__(self) -> None:
        self.scripts: dict[str, Callable[[int], Reply]] = {}
        self.counts: dict[str, int] = {}
        self.requests: dict[str, list[Received]] = {}
        self.accepted: dict[str, list[Received]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path
                with receiver.lock:
                    n = receiver.counts.get(path, 0)
                    receiver.counts[path] = n + 1
                    script = receiver.scripts.get(path, lambda _n: Reply())
                reply = script(n)
                try:
                    doc = orjson.loads(body)
                    key = f"{doc.get('aggregate_type')}:{doc.get('aggregate_id')}"
                except orjson.JSONDecodeError:
                    key = "?"
                rec = Received(self.headers.get("Idempotency-Key", ""), key, self.headers.get("X-Bridge-Event-Type", ""),
                               dict(self.headers), body, reply.status)
                with receiver.lock:
                    receiver.requests.setdefault(path, []).append(rec)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if reply.hold is not None:
                    reply.hold.wait(reply.hold_seconds)
                elif reply.hold_seconds:
                    threading.Event().wait(reply.hold_seconds)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.wfile.flush()
                except OSError:
                    return  # the client is gone (a timeout, a killed relay): not accepted
                if 200 <= reply.status < 300:
                    with receiver.lock:
                        receiver.accepted.setdefault(path, []).append(rec)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)

    def route(self, script: Callable[[int], Reply] | None = None) -> tuple[str, str]:
        """A fresh path with ``script``; returns (url, path)."""
        path = f"/hook/{uuid.uuid4().hex[:10]}"
        if script is not None:
            self.scripts[path] = script
        return f"http://127.0.0.1:{self.port}{path}", path


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def add_events(db: Database, specs: list[tuple[str, str, dict[str, Any]]], *, aggregate_type: str = "test") -> list[str]:
    """Insert events (type, aggregate id, data) through the outbox writer; returns their ids in order."""
    drafts = [(EventDraft(event_type=t, aggregate_type=aggregate_type, aggregate_id=k, payload=data), Origin())
              for t, k, data in specs]
    with db.write() as conn:
        write_events(db, conn, drafts)
    from sqlalchemy import select

    from bridge.db.tables import events

    with db.read() as conn:
        rows = conn.execute(select(events.c.id).order_by(events.c.seq.desc()).limit(len(specs))).scalars().all()
    return list(reversed(rows))
