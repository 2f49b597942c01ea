"""``amqp``: publish events to a RabbitMQ exchange with publisher confirms (pika).

AMQP 0-9-1 with RabbitMQ's publisher-confirm extension (``confirm.select``):
the broker acknowledges each message once it has taken responsibility for it
(for a persistent message routed to a durable queue: written to disk). A batch
is **pipelined**: every message of the relay's batch is published, then the
confirms are collected as they come (``basic.ack``/``basic.nack``, often with
``multiple=True`` covering many delivery tags at once), so a batch costs one
broker round trip instead of one per message. pika's ``BlockingConnection``
waits for each confirm in turn, so this module drives a ``SelectConnection``
and its I/O loop in the calling worker thread (one instance per worker thread,
as :mod:`outbox.destinations.base` promises; nothing is shared).

An event is delivered only when its own confirm arrives. A nack, a
``basic.return`` (with ``mandatory``: no queue bound for the routing key), a
confirm that does not come within ``confirm_timeout_seconds``, or a connection
or channel lost before the confirm is :class:`~bridge.errors.RetryableDelivery`
for that event: the relay retries it, so a broker restart or a dropped
connection loses nothing (at-least-once: a message the broker stored just
before the connection died arrives twice, with the same ``message_id``). The
relay re-sends a key's later events after a failed earlier one (see
``deliver_many`` in :mod:`outbox.destinations.base`).

pika hands its transport every frame on its own (a method, a header and a body
frame per message) and the transport writes each with a ``send`` call of its
own: three system calls per event, the largest part of this module's CPU. A
batch is therefore published into a :class:`_BatchingConnection`, which joins
the frames and hands them over in writes of up to ``_WRITE_BYTES``.

Every message is persistent (``delivery_mode=2``), with ``routing_key`` = the
event type, ``message_id`` = the event id, ``type`` = the event type,
``content_type`` ``application/json`` and the ordering key in the
``x-ordering-key`` header. The exchange is declared (durable) from config at
connect time. After any connection or channel failure the connection is
dropped and re-opened on the next batch; a connection idle for longer than
the heartbeat interval (its heartbeats only flow while a batch is out) is
replaced before use rather than trusted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop, SelectConnection
from pika.channel import Channel
from pydantic import Field

from bridge.errors import PermanentDelivery, RetryableDelivery
from outbox.destinations.base import Destination, DestinationConfig, OutboxEvent, Outcome, Receipt

__all__ = ["AmqpDestination", "AmqpDestinationConfig"]

log = logging.getLogger(__name__)

#: frames of a batch are handed to the socket in writes of about this many bytes
_WRITE_BYTES = 256 * 1024


class _BatchingConnection(SelectConnection):
    """A ``SelectConnection`` whose frames, while ``batching``, are joined into large writes.

    ``_adapter_emit_data`` is the hook through which pika's protocol layer hands bytes to
    an adapter's transport (see ``pika.connection.Connection``); :meth:`flush` must follow
    the last frame of a batch, or it stays here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batching = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self.batching:
            super()._adapter_emit_data(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= _WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the frames held so far to the transport, in one write."""
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
            super()._adapter_emit_data(data)


class AmqpDestinationConfig(DestinationConfig):
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    exchange: str = Field(..., min_length=1, max_length=255)
    exchange_type: str = Field("topic", pattern="^(topic|direct|fanout|headers)$")
    declare: bool = True
    #: mandatory publishing: an unroutable message (no bound queue) is retried instead of dropped
    mandatory: bool = False
    heartbeat_seconds: int = Field(30, ge=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    #: give up on a batch whose confirms have not all come back after this long (a broker
    #: blocking publishers on a memory or disk alarm, a stalled connection): retried later
    confirm_timeout_seconds: float = Field(30.0, gt=0)
    #: give up on a broker that blocks publishers (memory/disk alarm) after this long
    blocked_timeout_seconds: float = Field(30.0, gt=0)


class AmqpDestination(Destination):
    """Publish events to a RabbitMQ exchange, persistent, pipelined and confirmed."""

    Config = AmqpDestinationConfig

    def __init__(self, name: str, config: AmqpDestinationConfig) -> None:
        super().__init__(name, config)
        self.config: AmqpDestinationConfig = config
        self.connection: _BatchingConnection | None = None
        self.channel: Channel | None = None
        self._ready = False
        self._broken: str | None = None
        self._used_at = 0.0
        # the batch in flight: delivery tag -> index, and what became of each event
        self._tag = 0
        self._unconfirmed: dict[int, int] = {}
        self._by_id: dict[str, int] = {}
        self._returned: set[int] = set()
        self._events: Sequence[OutboxEvent] = ()
        self._outcomes: list[Outcome | None] = []
        self._started = 0.0

    # -- connection -------------------------------------------------------------

    def open(self) -> None:
        idle = time.monotonic() - self._used_at
        if self.channel is not None and self.channel.is_open and self._broken is None and not (
                self.config.heartbeat_seconds and idle > self.config.heartbeat_seconds):
            return
        self.close()
        params = pika.URLParameters(self.config.url)
        params.heartbeat = self.config.heartbeat_seconds
        params.socket_timeout = self.config.connect_timeout_seconds
        params.blocked_connection_timeout = self.config.blocked_timeout_seconds
        params.connection_attempts = 1
        self._ready, self._broken, self._tag = False, None, 0
        loop = IOLoop()
        loop.activate_poller()  # driven by hand in _run_until, as BlockingConnection does
        try:
            self.connection = _BatchingConnection(params, on_open_callback=self._on_open,
                                                  on_open_error_callback=self._on_open_error,
                                                  on_close_callback=self._on_connection_closed, custom_ioloop=loop)
        except (pika.exceptions.AMQPError, OSError) as exc:
            loop.close()
            self.close()
            raise RetryableDelivery(f"{self.name}: cannot open the broker channel ({type(exc).__name__})") from exc
        if not self._run_until(lambda: self._ready or self._broken is not None, self.config.connect_timeout_seconds) \
                or not self._ready:
            why = self._broken or "timed out"
            self.close()
            raise RetryableDelivery(f"{self.name}: cannot open the broker channel ({why})")
        self._used_at = time.monotonic()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, _connection: Any, error: Any) -> None:
        self._broken = type(error).__name__ if isinstance(error, BaseException) else str(error)

    def _on_channel(self, channel: Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        if not self.config.declare or self.channel is None:
            self._ready = True
            return
        self.channel.exchange_declare(self.config.exchange, exchange_type=self.config.exchange_type, durable=True,
                                      callback=self._on_declared)

    def _on_declared(self, _frame: Any) -> None:
        self._ready = True

    def _on_channel_closed(self, _channel: Any, reason: Any) -> None:
        # even 403/404 (access refused, exchange gone) are retried: a config fix should
        # drain a backlog, not leave a pile of dead letters
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._lost(f"broker closed the channel ({reason.reply_code})")
        else:  # the connection went first and took the channel with it
            self._lost(f"connection lost before the confirm ({type(reason).__name__})")
        if self.connection is not None and self.connection.is_open:
            self.connection.close()

    def _on_connection_closed(self, _connection: Any, reason: Any) -> None:
        self._lost(f"connection lost before the confirm ({type(reason).__name__})")

    def _lost(self, why: str) -> None:
        """Every event still awaiting its confirm is lost with the channel: retry, never assume."""
        self._broken = self._broken or why
        self.channel = None
        for i in self._unconfirmed.values():
            self._set(i, RetryableDelivery(f"{self.name}: {why}"))
        self._unconfirmed.clear()

    def _run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Drive the connection's I/O loop in this thread until ``done()`` or ``timeout`` seconds."""
        conn = self.connection
        if conn is None:
            return done()
        loop = conn.ioloop
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wake = loop.call_later(left, lambda: None)  # poll() sleeps until the next timer at most
            try:
                loop.poll()
                loop.process_timeouts()
            finally:
                loop.remove_timeout(wake)
        return True

    # -- publishing -------------------------------------------------------------

    def deliver(self, event: OutboxEvent) -> Receipt:
        [o] = self.deliver_many([event])
        if o is None or not o.delivered:
            error = (o.error if o else None) or "not delivered"
            if o is not None and o.permanent:
                raise PermanentDelivery(error)
            raise RetryableDelivery(error)
        return Receipt()

    def deliver_many(self, events: Sequence[OutboxEvent]) -> list[Outcome | None]:
        self._events, self._outcomes = events, [None] * len(events)
        self._unconfirmed, self._by_id, self._returned = {}, {}, set()
        self._started = time.perf_counter()
        todo: list[int] = []
        for i, event in enumerate(events):
            try:
                event.document()  # a payload that is not a JSON object is a poison event
                todo.append(i)
            except PermanentDelivery as exc:
                self._set(i, exc)
        if not todo:
            return self._outcomes
        try:
            self.open()
        except RetryableDelivery as exc:
            for i in todo:
                self._set(i, exc)
            return self._outcomes
        conn = self.connection
        if conn is not None:
            conn.batching = True
        try:
            for n, i in enumerate(todo):
                if not self._publish(i, events[i]):
                    for j in todo[n:]:
                        self._set(j, RetryableDelivery(f"{self.name}: {self._broken or 'channel closed'}"))
                    break
        finally:
            if conn is not None:
                conn.batching = False
                conn.flush()
        if not self._run_until(lambda: not self._unconfirmed, self.config.confirm_timeout_seconds):
            # late confirms would be matched against a new channel's tags: drop this one
            self._lost(f"no confirm within {self.config.confirm_timeout_seconds:g}s")
            self.close()
        self._used_at = time.monotonic()
        return self._outcomes

    def _publish(self, i: int, event: OutboxEvent) -> bool:
        channel = self.channel
        if channel is None or not channel.is_open or self._broken is not None:
            return False
        props = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=event.id, type=event.type, timestamp=int(time.time()),
            correlation_id=event.correlation_id, headers={"x-ordering-key": event.ordering_key},
        )
        try:
            channel.basic_publish(self.config.exchange, event.type, event.payload.encode(), props,
                                  mandatory=self.config.mandatory)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._broken = self._broken or f"publish failed ({type(exc).__name__})"
            return False
        self._tag += 1
        self._unconfirmed[self._tag] = i
        self._by_id[event.id] = i
        return True

    def _on_return(self, _channel: Any, method: Any, props: Any, _body: bytes) -> None:
        # basic.return comes before the basic.ack of the same message
        i = self._by_id.get(props.message_id)
        if i is not None:
            self._returned.add(i)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        tags = [t for t in self._unconfirmed if t <= tag] if method.multiple else [tag]
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for t in tags:
            i = self._unconfirmed.pop(t, None)
            if i is None:
                continue
            if nacked:
                self._set(i, RetryableDelivery(f"{self.name}: the broker nacked the message"))
            elif i in self._returned:
                event_type = self._events[i].type
                self._set(i, RetryableDelivery(f"{self.name}: no queue is bound for routing key {event_type!r}"))
            else:
                self._set(i, None)

    def _set(self, i: int, error: RetryableDelivery | PermanentDelivery | None) -> None:
        ms = (time.perf_counter() - self._started) * 1000
        self._outcomes[i] = Outcome(delivered=True, duration_ms=ms) if error is None else Outcome.from_error(error, ms)

    def close(self) -> None:
        conn, self.channel = self.connection, None
        self._ready = False
        if conn is None:
            return
        try:
            if conn.is_open:
                conn.close()
                self._run_until(lambda: conn.is_closed, 2.0)
        except Exception:  # noqa: BLE001 - closing a broken connection may fail in many ways
            log.debug("closing the broker connection failed", exc_info=True)
        finally:
            self.connection = None
            try:
                conn.ioloop.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the I/O loop failed", exc_info=True)
