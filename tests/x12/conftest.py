"""Fixtures for the X12 tests: samples, a parse helper, a crosswalk stand-in for mapping unit tests."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from bridge.errors import MasterDataError, Position
from mappings.base import MappingContext
from parsers.base import Message
from parsers.x12 import X12Parser

SAMPLES = Path(__file__).parent.parent / "samples" / "x12"


class DictCrosswalks:
    """Crosswalks held in a dict, for mapping unit tests without a database."""

    def __init__(self, entries: dict[str, dict[str, str]] | None = None) -> None:
        self.entries = entries or {}

    def find(self, kind: str, code: str) -> str | None:
        return self.entries.get(kind, {}).get(code)

    def lookup(self, kind: str, code: str, *, position: Position, field: str | None = None) -> str:
        hit = self.find(kind, code)
        if hit is None:
            raise MasterDataError(f"no {kind} crosswalk entry for code {code!r}", position.with_(field=field),
                                  kind=kind, key=code)
        return hit


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def parse(data: bytes, name: str = "t.x12", **config: object) -> list[Message]:
    parser = X12Parser(X12Parser.Config.model_validate(config))
    return list(parser.parse(io.BytesIO(data), name=name))


def ctx(entries: dict[str, dict[str, str]] | None = None) -> MappingContext:
    return MappingContext(channel="edi", file_name="t.x12", inbound_id=1, received_at=datetime.now(UTC),
                          crosswalks=DictCrosswalks(entries))
