"""The mapping contract: a ``Message`` becomes canonical records (and extra outbox events).

A mapping owns the meaning of one source message type: which field is the
quantity, which code goes through which crosswalk. It raises
:class:`~bridge.errors.MappingError` for content that cannot be mapped and lets
:class:`~bridge.errors.MasterDataError` from the crosswalks through; the pipeline
quarantines the message with that category and position. It never touches the
database itself: ``MappingContext`` gives it the crosswalks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from bridge.errors import Position
from mappings.canonical import CanonicalRecord
from parsers.base import Column, Message

__all__ = ["EventDraft", "Mapping", "MappingConfig", "MappingContext", "Output"]


class MappingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Crosswalk(Protocol):
    def lookup(self, kind: str, code: str, *, position: Position, field: str | None = None) -> str: ...

    def find(self, kind: str, code: str) -> str | None: ...


@dataclass(slots=True)
class EventDraft:
    """An outbox event that is not a record change: an ACK to send back, an outbound file.

    ``payload`` is JSON-serialisable; a file to deliver goes in ``payload["content"]``
    (text) with ``payload["filename"]``. ``aggregate_id`` orders delivery.
    ``route`` names the one destination the event goes to (an ACK's or an outbound
    file's return channel), whatever the subscriptions; None fans it out to every
    destination subscribed to ``event_type`` (see ``outbox.relay``).
    """

    event_type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    route: str | None = None
    #: what only the commit transaction may decide (an X12 ack's control numbers): called
    #: with its connection right before the event is written, it may fill in ``payload``;
    #: a number allocated there is spent only if the event commits. Must be re-runnable.
    prepare: Callable[[Connection], None] | None = None


Output = CanonicalRecord | EventDraft


@dataclass(slots=True)
class MappingContext:
    """What a mapping may know about where a message came from."""

    channel: str
    file_name: str
    inbound_id: int
    received_at: datetime
    crosswalks: Crosswalk
    correlation_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Mapping(ABC):
    """Base of every mapping; subclasses set ``Config`` and implement :meth:`map`."""

    Config: ClassVar[type[MappingConfig]] = MappingConfig
    #: the columns a flat-file mapping reads (None for structured formats)
    columns: ClassVar[list[Column] | None] = None

    def __init__(self, config: MappingConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        raise NotImplementedError

    def skipped(self, message: Message, ctx: MappingContext) -> None:  # noqa: B027 - optional hook
        """Called for a message not re-run (committed before); mappings that count keep count here."""

    def answer_duplicate(self, message: Message, ctx: MappingContext) -> Sequence[EventDraft]:
        """What to send back if ``message`` (already mapped) proves a resend of a committed one.

        The pipeline knows only in the commit transaction whether a message's (sender,
        control id) was seen before; then it writes these events instead of the message's
        outputs (an X12 interchange: a TA1 with note code 025). Default: nothing.
        """
        return ()

    def finish(self, ctx: MappingContext) -> Sequence[EventDraft]:
        """Called once after the last message of a file (acknowledgments per file go here)."""
        return ()
