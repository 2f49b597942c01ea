"""Tables from a component name to ``"module:Class"``, imported lazily.

A table, not decorator registration: a plugin whose module nobody imported
cannot go silently missing, and the contract tests loop over every entry.
Adding a format, a mapping or a destination is one module plus one line here.

Every registered class has a docstring and a nested pydantic ``Config`` with
``extra="forbid"``; ``bridge.yaml`` blocks are validated against it.
"""

from __future__ import annotations

import importlib
from typing import Any

from bridge.errors import ConfigError

__all__ = ["DESTINATIONS", "MAPPINGS", "PARSERS", "ROLES", "SOURCES", "import_target", "load", "names"]

SOURCES: dict[str, str] = {
    "folder": "bridge.sources.folder:FolderSource",
    "sftp": "bridge.sources.sftp:SftpSource",
    "mllp": "bridge.sources.mllp:MllpSource",
}

PARSERS: dict[str, str] = {
    "csv": "parsers.flat:CsvParser",
    "fixed_width": "parsers.flat:FixedWidthParser",
    "hl7": "parsers.hl7:HL7Parser",
    "xml": "parsers.xml:XmlParser",
    "x12": "parsers.x12:X12Parser",
}

MAPPINGS: dict[str, str] = {
    "inventory_movement_csv": "mappings.flat_inventory_movement:InventoryMovementMapping",
    "item_csv": "mappings.flat_item:ItemMapping",
    "hl7_dft_p03": "mappings.hl7_dft_p03:DftP03Mapping",
    "hl7_adt": "mappings.hl7_adt:AdtMapping",
    "hl7_mfn": "mappings.hl7_mfn:MfnMapping",
    "cxml": "mappings.cxml:CxmlMapping",
    "xml_xpath": "mappings.xml_xpath:XPathMapping",
    "x12_837": "mappings.x12_837:Claim837Mapping",
    "x12_835": "mappings.x12_835:Remittance835Mapping",
    "x12_850": "mappings.x12_850:PurchaseOrder850Mapping",
    "x12_855": "mappings.x12_855:PurchaseOrderAck855Mapping",
    "x12_856": "mappings.x12_856:Shipment856Mapping",
    "x12_810": "mappings.x12_810:Invoice810Mapping",
    "x12_832": "mappings.x12_832:Catalog832Mapping",
    "x12_999": "mappings.x12_999:FunctionalAck999Mapping",
    "x12": "mappings.x12_any:X12AnyMapping",
}

DESTINATIONS: dict[str, str] = {
    "amqp": "outbox.destinations.amqp:AmqpDestination",
    "folder": "outbox.destinations.folder:FolderDestination",
    "http": "outbox.destinations.http:HttpDestination",
    "sftp": "outbox.destinations.sftp:SftpDestination",
}

ROLES: dict[str, dict[str, str]] = {
    "source": SOURCES,
    "parser": PARSERS,
    "mapping": MAPPINGS,
    "destination": DESTINATIONS,
}


def names(role: str) -> list[str]:
    return sorted(ROLES[role])


def load(role: str, name: str, *, key: str | None = None) -> Any:
    """Import and return the class registered as ``name`` for ``role``."""
    table = ROLES[role]
    try:
        target = table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(key or f"{role}.type", f"unknown {role} type {name!r} (known: {known})") from None
    return import_target(target)


def import_target(target: str) -> Any:
    """The object a ``"package.module:attr"`` string names, imported on first use.

    Registries, ``bridge.runtime.SERVICES`` and the CLI's ``COMMANDS`` name their
    entries this way so that a process imports only what its configuration uses.
    """
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
