"""``amqp``: publish each event to a RabbitMQ exchange with publisher confirms (pika).

AMQP 0-9-1 with RabbitMQ's publisher-confirm extension (``confirm.select``):
``basic_publish`` returns only once the broker has taken responsibility for the
message (for a persistent message routed to a durable queue: written to disk).
A publish that is nacked, or whose confirm is lost with the connection, raises
:class:`~bridge.errors.RetryableDelivery`; the relay then retries it, so a broker
restart or a dropped connection loses nothing (at-least-once: a message the
broker stored just before the connection died may arrive twice, with the same
``message_id``).

Every message is persistent (``delivery_mode=2``), with ``routing_key`` = the
event type, ``message_id`` = the event id, ``type`` = the event type,
``content_type`` ``application/json`` and the ordering key in the
``x-ordering-key`` header. The exchange is declared (durable) from config at
connect time. After any connection or channel failure the connection is
dropped and re-opened on the next delivery.
"""

from __future__ import annotations

import logging
import time

import pika
import pika.exceptions
from pydantic import Field

from bridge.errors import RetryableDelivery
from outbox.destinations.base import Destination, DestinationConfig, OutboxEvent, Receipt

__all__ = ["AmqpDestination", "AmqpDestinationConfig"]

log = logging.getLogger(__name__)


class AmqpDestinationConfig(DestinationConfig):
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    exchange: str = Field(..., min_length=1, max_length=255)
    exchange_type: str = Field("topic", pattern="^(topic|direct|fanout|headers)$")
    declare: bool = True
    #: mandatory publishing: an unroutable message (no bound queue) is retried instead of dropped
    mandatory: bool = False
    heartbeat_seconds: int = Field(30, ge=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    #: give up on a broker that blocks publishers (memory/disk alarm) after this long
    blocked_timeout_seconds: float = Field(30.0, gt=0)


class AmqpDestination(Destination):
    """Publish events to a RabbitMQ exchange, persistent and confirmed."""

    Config = AmqpDestinationConfig

    def __init__(self, name: str, config: AmqpDestinationConfig) -> None:
        super().__init__(name, config)
        self.config: AmqpDestinationConfig = config
        self.connection: pika.BlockingConnection | None = None
        self.channel: pika.adapters.blocking_connection.BlockingChannel | None = None

    def open(self) -> None:
        if self.channel is not None and self.channel.is_open:
            return
        self.close()
        params = pika.URLParameters(self.config.url)
        params.heartbeat = self.config.heartbeat_seconds
        params.socket_timeout = self.config.connect_timeout_seconds
        params.blocked_connection_timeout = self.config.blocked_timeout_seconds
        params.connection_attempts = 1
        try:
            self.connection = pika.BlockingConnection(params)
            channel = self.connection.channel()
            channel.confirm_delivery()
            if self.config.declare:
                channel.exchange_declare(self.config.exchange, exchange_type=self.config.exchange_type, durable=True)
            self.channel = channel
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise RetryableDelivery(f"{self.name}: cannot open the broker channel ({type(exc).__name__})") from exc

    def deliver(self, event: OutboxEvent) -> Receipt:
        event.document()  # a payload that is not a JSON object is a poison event
        self.open()
        assert self.channel is not None
        props = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=event.id, type=event.type, timestamp=int(time.time()),
            correlation_id=event.correlation_id, headers={"x-ordering-key": event.ordering_key},
        )
        try:
            self.channel.basic_publish(self.config.exchange, event.type, event.payload.encode(), props,
                                       mandatory=self.config.mandatory)
        except pika.exceptions.UnroutableError as exc:
            raise RetryableDelivery(f"{self.name}: no queue is bound for routing key {event.type!r}") from exc
        except pika.exceptions.NackError as exc:
            raise RetryableDelivery(f"{self.name}: the broker nacked the message") from exc
        except pika.exceptions.ChannelClosedByBroker as exc:
            # even 403/404 (access refused, exchange gone) are retried: a config fix should
            # drain a backlog, not leave a pile of dead letters
            self.close()
            raise RetryableDelivery(f"{self.name}: broker closed the channel ({exc.reply_code})") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            # the confirm, if any, is lost with the connection: retry, never assume delivered
            self.close()
            raise RetryableDelivery(f"{self.name}: connection lost before the confirm ({type(exc).__name__})") from exc
        return Receipt()

    def close(self) -> None:
        conn, self.connection, self.channel = self.connection, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in many ways
                log.debug("closing the broker connection failed", exc_info=True)
