"""Masking PHI in what the API returns.

A canonical model lists its patient identifiers in ``phi_fields``
(:mod:`mappings.canonical`). A client without ``phi:read`` gets :data:`MASK` in
their place, in records and in the ``record`` of event payloads alike; a null
stays null, so a client still sees that the field is absent.

:func:`hidden_fields` answers once per page which fields to mask, so the
per-row work (:func:`mask_fields`) is a few dict look-ups that touch only
those fields, and a row with nothing to mask is left as it is stored.
"""

from __future__ import annotations

from typing import Any

from bridge.api.keys import Client
from mappings.canonical import record_class

__all__ = ["MASK", "PHI_SCOPE", "hidden_fields", "mask_fields", "mask_record"]

MASK = "***"
PHI_SCOPE = "phi:read"


def hidden_fields(record_type: str | None, client: Client) -> frozenset[str]:
    """The fields of ``record_type`` that ``client`` must see masked (none with ``phi:read``)."""
    if record_type is None or client.allows(PHI_SCOPE):
        return frozenset()
    cls = record_class(record_type)
    return cls.phi_fields if cls is not None else frozenset()


def mask_fields(data: dict[str, Any], fields: frozenset[str]) -> bool:
    """Mask ``fields`` of ``data`` in place; whether anything changed (a non-null value was there)."""
    changed = False
    for name in fields:
        if data.get(name) is not None:
            data[name] = MASK
            changed = True
    return changed


def mask_record(record_type: str | None, data: Any, client: Client) -> Any:
    """``data`` (a record's fields) with the PHI fields of ``record_type`` masked unless ``client`` may see them."""
    fields = hidden_fields(record_type, client)
    if not isinstance(data, dict) or not fields:
        return data
    masked = dict(data)
    mask_fields(masked, fields)
    return masked
