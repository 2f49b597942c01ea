"""The exception tree of bridge, and the position an input error points at.

::

    BridgeError
    ├── ConfigError          names the key and the reason; stops start-up
    ├── InputError           bad content; carries category and Position; no PHI in the text
    │   ├── ParseError       "parse"
    │   ├── MappingError     "mapping"
    │   └── MasterDataError  "master_data"
    ├── DeliveryError        "delivery"
    │   ├── RetryableDelivery
    │   └── PermanentDelivery
    ├── SourceError          a transport failed; retried, the loop never dies
    └── StorageError         driver errors, translated once at the db boundary

Foreign exceptions are translated once, at the boundary where they occur,
with ``raise ... from``. Only ``bridge.api.problems`` turns these into HTTP
responses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = [
    "BridgeError",
    "ConfigError",
    "DeliveryError",
    "InputError",
    "MappingError",
    "MasterDataError",
    "ParseError",
    "PermanentDelivery",
    "Position",
    "RetryableDelivery",
    "SourceError",
    "StorageError",
]


@dataclass(frozen=True, slots=True)
class Position:
    """Where in an inbound unit something is.

    ``message`` is the 0-based index of the message within the file (a CSV row,
    an HL7 message of a batch, an X12 transaction set). ``line`` is the 1-based
    physical line (CSV, fixed-width, XML), ``segment`` the segment id and its
    1-based ordinal (``"FT1"``, 3) for HL7 and X12, ``field`` a column name or an
    element reference like ``"FT1-10"`` or ``"CLP04"``. ``control`` holds
    control numbers (MSH-10, ISA13/GS06/ST02) when the format has them.
    """

    file: str | None = None
    message: int | None = None
    line: int | None = None
    column: int | None = None
    segment: str | None = None
    segment_index: int | None = None
    field: str | None = None
    control: str | None = None

    def with_(self, **changes: Any) -> Position:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Position:
        return cls(**(data or {}))

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"file {self.file!r}")
        if self.message is not None:
            parts.append(f"message {self.message}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        if self.segment is not None:
            seg = self.segment if self.segment_index is None else f"{self.segment} #{self.segment_index}"
            parts.append(f"segment {seg}")
        if self.field is not None:
            parts.append(f"field {self.field}")
        if self.control is not None:
            parts.append(f"control {self.control}")
        return ", ".join(parts) or "unknown position"


class BridgeError(Exception):
    """Root of every error bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration value is wrong. ``key`` is the dotted path to it."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class InputError(BridgeError):
    """Bad content in an inbound unit.

    The message must name what and where, never repeat patient data: quote
    codes and column names, not values from PHI fields.
    """

    category = "input"

    def __init__(self, reason: str, position: Position | None = None, *, key: str | None = None) -> None:
        self.reason = reason
        self.position = position or Position()
        #: the missing or bad code (an item number, a department), for master-data triage
        self.key = key
        super().__init__(reason)

    def at(self, position: Position) -> InputError:
        """Return the same error placed at ``position`` (fields set here win)."""
        merged = replace(position, **{k: v for k, v in asdict(self.position).items() if v is not None})
        err = type(self).__new__(type(self))
        err.__dict__.update(self.__dict__)
        err.position = merged
        err.args = self.args
        return err

    def __str__(self) -> str:
        return f"{self.reason} ({self.position})"


class ParseError(InputError):
    category = "parse"


class MappingError(InputError):
    category = "mapping"


class MasterDataError(InputError):
    """A code has no active crosswalk entry. ``kind`` names the crosswalk."""

    category = "master_data"

    def __init__(self, reason: str, position: Position | None = None, *, kind: str, key: str) -> None:
        super().__init__(reason, position, key=key)
        self.kind = kind


class DeliveryError(BridgeError):
    category = "delivery"

    def __init__(self, reason: str, *, status_code: int | None = None, response: str | None = None,
                 retry_after: float | None = None) -> None:
        self.reason = reason
        self.status_code = status_code
        self.response = response
        self.retry_after = retry_after
        super().__init__(reason)


class RetryableDelivery(DeliveryError):
    """The destination may accept the event later (timeouts, 5xx, 429, broker down)."""


class PermanentDelivery(DeliveryError):
    """The destination refused the event for good (4xx, unrenderable): dead-letter it."""


class SourceError(BridgeError):
    """A transport failed (connection refused, host key mismatch, permission)."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        self.reason = reason
        self.retryable = retryable
        super().__init__(reason)


class StorageError(BridgeError):
    """The database failed; raised once at the storage boundary."""
