"""Masking PHI in what the API returns.

A canonical model lists its patient identifiers in ``phi_fields``
(:mod:`mappings.canonical`). A client without ``phi:read`` gets :data:`MASK` in
their place, in records and in the ``record`` of event payloads alike; a null
stays null, so a client still sees that the field is absent.
"""

from __future__ import annotations

from typing import Any

from bridge.api.keys import Client
from mappings.canonical import record_class

__all__ = ["MASK", "PHI_SCOPE", "mask_record"]

MASK = "***"
PHI_SCOPE = "phi:read"


def mask_record(record_type: str | None, data: Any, client: Client) -> Any:
    """``data`` (a record's fields) with the PHI fields of ``record_type`` masked unless ``client`` may see them."""
    if not isinstance(data, dict) or client.allows(PHI_SCOPE) or record_type is None:
        return data
    cls = record_class(record_type)
    fields = cls.phi_fields if cls is not None else frozenset()
    if not fields:
        return data
    return {k: (MASK if k in fields and v is not None else v) for k, v in data.items()}
