"""The relay to the real RabbitMQ on 127.0.0.1:5672, on SQLite and PostgreSQL.

The exchange is unique to the test session and each test binds its own queue
to a routing-key prefix unique to the test; both are deleted afterwards. The
shared broker is never restarted (other engineers use it): a lost connection
mid-stream is produced by shutting down the publisher's socket under it, and
the broker restart test runs against a private node of this session
(:mod:`tests.outbox.broker`, started once on free loopback ports).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest

from bridge.db import Database
from tests.conftest import IN_CI
from tests.outbox import broker
from tests.outbox.broker import BrokerNode
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


def drain(q: str, url: str = AMQP_URL) -> list[pika.BasicProperties]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
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
    sock = dest.connection._transport._sock  # type: ignore[attr-defined]
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


@pytest.fixture(scope="session")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """A RabbitMQ node of this test session only, so a test may restart it."""
    why = broker.available()
    if why is not None:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    node = broker.start_node(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield node
    finally:
        node.stop()


def test_broker_restarted_mid_stream_loses_nothing(pg_db: Database, private_broker: BrokerNode) -> None:
    url = private_broker.url
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.exchange_declare("bridge-restart", exchange_type="topic", durable=True)
    ch.queue_declare("bridge-restart", durable=True)
    ch.queue_bind("bridge-restart", "bridge-restart", routing_key="#")
    conn.close()
    # a generous retry budget, so the outage (seconds) is retried through, not dead-lettered
    relay = make_relay(pg_db, {"bus": {"type": "amqp", "url": url, "exchange": "bridge-restart"}},
                       workers=2, batch_size=4, run_length=2, max_attempts=10_000, backoff_cap_seconds=0.2)
    ids: list[str] = []
    writing = threading.Event()
    writing.set()

    def stream() -> None:  # events keep coming before, during and after the restart
        i = 0
        while writing.is_set():
            ids.extend(add_events(pg_db, [("item.recorded", f"I{(i + j) % 40}", {"i": i + j}) for j in range(5)]))
            i += 5
            time.sleep(0.02)

    writer = threading.Thread(target=stream)
    relay.start()
    writer.start()
    try:
        _wait(lambda: _delivered(pg_db) > 0, 60)
        private_broker.restart()
        _wait(lambda: _delivered(pg_db) > len(ids) // 2, 60)  # and flowing again
        writing.clear()
        writer.join(30)
        _wait(lambda: _delivered(pg_db) == len(ids), 120)
    finally:
        writing.clear()
        relay.stop()
    rows = delivery_rows(pg_db, "bus")
    assert {r.status for r in rows} == {"delivered"}
    retried = [a for r in rows for a in attempt_rows(pg_db, r.id) if a.outcome == "retry"]
    assert retried, "the restart was not seen mid-stream"
    got = [p.message_id for p, _ in drain("bridge-restart", url)]
    # nothing lost across the restart; a repeat is a redelivery under the same message_id
    assert set(got) == set(ids) and len(got) >= len(ids)


def _delivered(db: Database) -> int:
    return sum(1 for r in delivery_rows(db, "bus") if r.status == "delivered")


def _wait(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
