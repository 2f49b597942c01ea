"""Typed conversion of raw strings, raising MappingError that names the field.

The error text names the field and the expected form, never the value: the
value may be a patient identifier.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from bridge.errors import MappingError, Position

__all__ = ["finite_decimal", "to_date", "to_datetime", "to_decimal", "zone"]

_zones: dict[str, ZoneInfo] = {}


def zone(name: str) -> ZoneInfo:
    z = _zones.get(name)
    if z is None:
        z = _zones[name] = ZoneInfo(name)
    return z


def to_decimal(raw: str, *, field: str, position: Position) -> Decimal:
    text = raw.strip().replace(",", "")
    if not text:
        raise MappingError(f"{field} is empty", position.with_(field=field))
    neg = text.startswith("(") and text.endswith(")")
    if neg:
        text = text[1:-1]
    value = finite_decimal(text, field=field, position=position)
    return -value if neg else value


def finite_decimal(text: str, *, field: str, position: Position) -> Decimal:
    """``text`` as a finite Decimal: ``NaN`` and ``Infinity`` are refused too (the error names ``field``)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise MappingError(f"{field} is not a number", position.with_(field=field)) from None
    if not value.is_finite():
        raise MappingError(f"{field} is not a finite number", position.with_(field=field))
    return value


def to_datetime(raw: str, *, formats: list[str], tz: str, field: str, position: Position) -> datetime:
    """Parse with the first matching format; naive times are read in ``tz`` and returned in UTC."""
    text = raw.strip()
    if not text:
        raise MappingError(f"{field} is empty", position.with_(field=field))
    if len(text) >= 16 and text[4] == "-" and text[7] == "-":
        # ISO 8601 (the common case): fromisoformat is ~40x faster than strptime
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if value.tzinfo is None:
                value = value.replace(tzinfo=zone(tz))
            return value.astimezone(UTC)
    for fmt in formats:
        try:
            value = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone(tz))
        return value.astimezone(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise MappingError(f"{field} is not a date-time in a known format ({', '.join(formats)} or ISO 8601)",
                           position.with_(field=field)) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz))
    return value.astimezone(UTC)


def to_date(raw: str, *, formats: list[str], field: str, position: Position) -> date:
    text = raw.strip()
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise MappingError(f"{field} is not a date in a known format ({', '.join(formats)})", position.with_(field=field))
