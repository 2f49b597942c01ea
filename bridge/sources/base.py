"""The source contract: find complete inbound units, land them, then acknowledge the original.

A source never deletes or moves an original before :meth:`Lander.land` has
returned (the landing committed). Transport failures are ``SourceError``s: the
source logs them, records them in :attr:`Source.status`, backs off and goes on;
its loop never dies and never blocks another channel.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridge.pipeline.land import Lander

__all__ = ["Source", "SourceConfig", "SourceStatus"]


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class SourceStatus:
    state: str = "starting"
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None
    landed: int = 0
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Source(ABC):
    """Base of every source. ``start`` returns at once; work happens on the source's own thread."""

    Config: ClassVar[type[SourceConfig]] = SourceConfig

    def __init__(self, channel: str, config: SourceConfig, lander: Lander) -> None:
        self.channel = channel
        self.config = config
        self.lander = lander
        self.status = SourceStatus()
        self._stop = threading.Event()

    @abstractmethod
    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the source to stop; a unit being landed finishes landing first."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()
