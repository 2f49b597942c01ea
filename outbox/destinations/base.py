"""The destination contract: what the relay hands a destination, and what it expects back.

A destination is one module with one class registered in
``bridge.registry.DESTINATIONS`` (``"name": "outbox.destinations.<name>:<Kind>Destination"``)
and a nested pydantic ``Config`` with ``extra="forbid"``; the ``destinations.<name>``
block of ``bridge.yaml`` (minus ``type``, ``subscribe``, ``enabled``) is validated
against it.

The relay owns everything else: claiming, ordering per key, the retry schedule,
dead letters and the attempt log. A destination only delivers events. One event,
in :meth:`Destination.deliver`:

- return normally (optionally a :class:`Receipt`) when the far side accepted it;
- raise :class:`~bridge.errors.RetryableDelivery` when it may accept it later
  (timeout, connection refused, 5xx, 429; set ``retry_after`` in seconds when the
  far side said when);
- raise :class:`~bridge.errors.PermanentDelivery` when it never will (4xx, an
  event that cannot be rendered): the event is dead-lettered at once.

Any other exception is treated as retryable and logged without the payload.

A batch, in :meth:`Destination.deliver_many`: the relay hands over a claimed
batch in ``event_seq`` order and expects one :class:`Outcome` per event, in the
same order, or ``None`` for an event not attempted (it is released and comes
back in a later claim). The default delivers one by one through ``deliver``
and, after a retryable failure, attempts nothing more of that ordering key, so
order per key holds. Override it to pipeline (``amqp`` publishes the whole batch,
then collects the publisher confirms) or to work on different keys at once
(``http``); keep each key's events in order. If an earlier event of a key fails
while a later one of the same key was already sent (pipelining), the relay
treats the later one as not delivered and sends it again after the earlier one:
a duplicate with the same event id, within the at-least-once contract.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict

from bridge.errors import DeliveryError, PermanentDelivery

__all__ = ["Destination", "DestinationConfig", "OutboxEvent", "Outcome", "Receipt", "attempt", "attempt_many"]

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

    def deliver_many(self, events: Sequence[OutboxEvent]) -> list[Outcome | None]:
        """One outcome per event, in order (None: not attempted); one by one by default, and
        nothing more of a key after a retryable failure of it."""
        blocked: set[str] = set()
        out: list[Outcome | None] = []
        for event in events:
            if event.ordering_key in blocked:
                out.append(None)
                continue
            o = attempt(self, event)
            if not o.delivered and not o.permanent:
                blocked.add(event.ordering_key)
            out.append(o)
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; must not raise."""


def attempt_many(destination: Destination, events: Sequence[OutboxEvent]) -> list[Outcome | None]:
    """``destination.deliver_many(events)``, never raising: a destination bug fails the batch retryably."""
    started = time.perf_counter()
    try:
        out = destination.deliver_many(events)
        if len(out) != len(events):
            raise RuntimeError(f"deliver_many returned {len(out)} outcomes for {len(events)} events")
        return out
    except Exception as exc:  # noqa: BLE001 - a destination bug must not kill the worker
        log.exception("destination raised unexpectedly", extra={"destination": destination.name})
        ms = (time.perf_counter() - started) * 1000
        return [Outcome(delivered=False, duration_ms=ms, error=f"{type(exc).__name__} in destination {destination.name!r}")
                for _ in events]


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
