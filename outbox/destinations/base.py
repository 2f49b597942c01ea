"""The destination contract: what the relay hands a destination, and what it expects back.

A destination is one module with one class registered in
``bridge.registry.DESTINATIONS`` (``"name": "outbox.destinations.<name>:<Kind>Destination"``)
and a nested pydantic ``Config`` with ``extra="forbid"``; the ``destinations.<name>``
block of ``bridge.yaml`` (minus ``type``, ``subscribe``, ``enabled``) is validated
against it.

The relay owns everything else: claiming, ordering per key, the retry schedule,
dead letters and the attempt log. A destination only delivers one event:

- return normally (optionally a :class:`Receipt`) when the far side accepted it;
- raise :class:`~bridge.errors.RetryableDelivery` when it may accept it later
  (timeout, connection refused, 5xx, 429; set ``retry_after`` in seconds when the
  far side said when);
- raise :class:`~bridge.errors.PermanentDelivery` when it never will (4xx, an
  event that cannot be rendered): the event is dead-lettered at once.

Any other exception is treated as retryable and logged without the payload.

Threading: the relay builds **one instance per worker thread** and never shares
it, so a destination may hold a connection (an SFTP session, an AMQP channel)
without locks. ``open`` is optional (connect lazily in ``deliver`` if you like);
``close`` must not raise. Delivery is at-least-once: a receiver deduplicates by
``event.id``, which every destination should pass on (Idempotency-Key header,
AMQP message_id, a file name).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict

from bridge.errors import DeliveryError, PermanentDelivery

__all__ = ["Destination", "DestinationConfig", "OutboxEvent", "Outcome", "Receipt", "attempt"]

log = logging.getLogger(__name__)


class DestinationConfig(BaseModel):
    """Base of every destination's ``Config``: unknown keys stop start-up by name."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One outbox event as the relay read it from ``events``.

    ``payload`` is the stored JSON envelope text (see ``outbox.writer``):
    ``id``, ``type``, ``created_at``, ``aggregate_type``, ``aggregate_id``,
    ``correlation_id``, ``source`` and either ``record`` (a record change) or
    ``data`` (an ACK or outbound file: ``data.content`` + ``data.filename``).
    """

    seq: int
    id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    created_at: datetime
    payload: str
    correlation_id: str | None = None

    @property
    def ordering_key(self) -> str:
        return f"{self.aggregate_type}:{self.aggregate_id}"

    def document(self) -> dict[str, Any]:
        """The parsed envelope; an unparsable payload is a poison event (PermanentDelivery)."""
        try:
            doc = orjson.loads(self.payload)
        except orjson.JSONDecodeError as exc:
            raise PermanentDelivery(f"event {self.id} payload is not valid JSON ({exc.msg} at {exc.pos})") from None
        if not isinstance(doc, dict):
            raise PermanentDelivery(f"event {self.id} payload is not a JSON object")
        return doc


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the far side said when it accepted an event (kept in ``delivery_attempts``)."""

    status_code: int | None = None
    response: str | None = None


@dataclass(slots=True)
class Outcome:
    """The result of one attempt, as the relay records it."""

    delivered: bool
    duration_ms: float = 0.0
    status_code: int | None = None
    response: str | None = None
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_error(cls, exc: DeliveryError, duration_ms: float) -> Outcome:
        return cls(delivered=False, duration_ms=duration_ms, status_code=exc.status_code,
                   response=exc.response, error=exc.reason, permanent=isinstance(exc, PermanentDelivery),
                   retry_after=exc.retry_after)


class Destination:
    """Base class: subclass, set ``Config``, implement :meth:`deliver` (and ``open``/``close``
    if the destination holds a connection)."""

    Config: ClassVar[type[BaseModel]] = DestinationConfig

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect ahead of the first delivery (optional)."""

    def deliver(self, event: OutboxEvent) -> Receipt | None:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; must not raise."""


def attempt(destination: Destination, event: OutboxEvent) -> Outcome:
    """Deliver one event, time it, and classify the result; never raises."""
    started = time.perf_counter()
    try:
        receipt = destination.deliver(event)
    except DeliveryError as exc:
        return Outcome.from_error(exc, (time.perf_counter() - started) * 1000)
    except Exception as exc:  # noqa: BLE001 - a destination bug must not kill the worker
        log.exception("destination raised unexpectedly", extra={"destination": destination.name, "event": event.id})
        return Outcome(delivered=False, duration_ms=(time.perf_counter() - started) * 1000,
                       error=f"{type(exc).__name__} in destination {destination.name!r}")
    ms = (time.perf_counter() - started) * 1000
    if receipt is None:
        return Outcome(delivered=True, duration_ms=ms)
    return Outcome(delivered=True, duration_ms=ms, status_code=receipt.status_code, response=receipt.response)
