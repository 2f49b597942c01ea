"""The relay to the real RabbitMQ on 127.0.0.1:5672, on SQLite and PostgreSQL.

The exchange is unique to the test session and each test binds its own queue
to a routing-key prefix unique to the test; both are deleted afterwards. The
shared broker is never restarted (other engineers use it): a lost connection
mid-stream is produced by shutting down the publisher's socket under it.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import pika
import pytest

from bridge.db import Database
from tests.outbox.conftest import add_events
from tests.outbox.helpers import attempt_rows, delivery_rows, make_relay

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(scope="session")
def exchange() -> Iterator[str]:
    name = f"bridge-test-{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        conn.channel().exchange_delete(name)
    finally:
        conn.close()


@pytest.fixture
def queue(exchange: str) -> Iterator[tuple[str, str]]:
    """(queue name, routing prefix): a queue bound to ``<prefix>.#`` on the session exchange."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange, exchange_type="topic", durable=True)
    q = f"bridge-test-{prefix}"
    ch.queue_declare(q, durable=True)
    ch.queue_bind(q, exchange, routing_key=f"{prefix}.#")
    try:
        yield q, prefix
    finally:
        ch.queue_delete(q)
        conn.close()


def drain(q: str) -> list[pika.BasicProperties]:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    out = []
    try:
        ch = conn.channel()
        while True:
            method, props, _body = ch.basic_get(q, auto_ack=True)
            if method is None:
                return out
            out.append((props, method.routing_key))
    finally:
        conn.close()


def test_publishes_persistent_confirmed_messages(db: Database, exchange: str, queue: tuple[str, str]) -> None:
    q, prefix = queue
    ids = add_events(db, [(f"{prefix}.po.created", f"P{i % 3}", {"i": i}) for i in range(9)])
    relay = make_relay(db, {"bus": {"type": "amqp", "url": AMQP_URL, "exchange": exchange}})
    relay.run_until_idle()
    got = drain(q)
    assert [p.message_id for p, _ in got] == ids  # one key per batch slot: seq order here
    props, rk = got[0]
    assert rk == f"{prefix}.po.created" and props.delivery_mode == 2
    assert props.headers["x-ordering-key"] == "test:P0"
    assert {r.status for r in delivery_rows(db, "bus")} == {"delivered"}


def test_connection_lost_mid_stream_loses_nothing(db: Database, exchange: str, queue: tuple[str, str]) -> None:
    q, prefix = queue
    n = 160
    ids = add_events(db, [(f"{prefix}.item.recorded", f"I{i % 40}", {"i": i}) for i in range(n)])
    relay = make_relay(db, {"bus": {"type": "amqp", "url": AMQP_URL, "exchange": exchange}}, batch_size=20)
    relay.fanout()
    inst = relay.open_instances()
    dest = inst["bus"]
    published = threading.Event()
    cut = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while relay.pending(["bus"]):
                relay.work_once(inst)
                if not published.is_set():
                    published.set()
                    cut.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    published.wait(10)
    # the socket dies under the worker as it starts its next batch: publishes fail mid-stream
    sock = dest.connection._impl._transport._sock  # type: ignore[attr-defined]
    cut.set()
    sock.shutdown(socket.SHUT_RDWR)
    t.join(60)
    dest.close()
    assert not errors and not t.is_alive()
    got = [p.message_id for p, _ in drain(q)]
    assert set(got) == set(ids)  # nothing lost
    assert len(got) - len(set(got)) <= 20  # duplicates at most one batch, detectable by message_id
    rows = delivery_rows(db, "bus")
    assert {r.status for r in rows} == {"delivered"}
    retried = [a for r in rows for a in attempt_rows(db, r.id) if a.outcome == "retry"]
    assert retried and all("connection lost" in a.error or "cannot open" in a.error for a in retried)
