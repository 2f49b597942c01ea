"""The parser contract: a stream of bytes becomes a stream of ``Message``s.

A parser owns tokenising one format and pointing at positions in it; it
knows nothing of records, crosswalks or the database (that is ``mappings``
and ``bridge.pipeline``). Parsers stream: memory stays bounded whatever the
file size, so they read from a binary stream and yield as they go.

Errors:

- a message that cannot be read yields a ``Message`` with ``error`` set (a
  :class:`~bridge.errors.ParseError` with its position); the pipeline
  quarantines that message and the rest of the file goes on;
- a file that cannot be read at all (empty, no header, wrong envelope) raises
  :class:`~bridge.errors.ParseError`; messages already yielded stay committed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict

from bridge.errors import ParseError, Position

__all__ = ["Column", "Message", "Parser", "ParserConfig"]


class ParserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(slots=True)
class Message:
    """One unit of a file that maps on its own: a CSV row, an HL7 message, an X12 set.

    ``type`` names what it is in the format's own words (``"row"``,
    ``"DFT^P03"``, ``"837"``, ``"OrderRequest"``); ``data`` is the parsed form the
    format's mappings expect. ``raw`` is a short excerpt (at most a few KB) kept
    for operators; never log it, it may carry PHI.
    """

    index: int
    type: str
    data: Any
    position: Position
    control_id: str | None = None
    sender: str | None = None
    error: ParseError | None = None
    raw: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Column:
    """A column a mapping reads from a flat file, with the header names it accepts."""

    name: str
    required: bool = True
    aliases: tuple[str, ...] = ()


class Parser(ABC):
    """Base of every parser; subclasses set ``Config`` and implement :meth:`parse`."""

    Config: ClassVar[type[ParserConfig]] = ParserConfig

    def __init__(self, config: ParserConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def bind(self, columns: list[Column] | None) -> None:  # noqa: B027 - optional hook
        """Tell the parser which columns the channel's mapping reads (flat formats use it)."""

    @abstractmethod
    def parse(self, stream: BinaryIO, *, name: str) -> Iterator[Message]:
        """Yield the messages of ``stream``; ``name`` is the file name for positions."""
        raise NotImplementedError
