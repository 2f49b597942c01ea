"""Fixtures for the X12 tests: samples, a parse helper, a crosswalk stand-in for mapping unit tests."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from mappings.base import MappingContext
from parsers.base import Message
from parsers.x12 import X12Parser
from tests.helpers import DictCrosswalks

SAMPLES = Path(__file__).parent.parent / "samples" / "x12"



def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def parse(data: bytes, name: str = "t.x12", **config: object) -> list[Message]:
    parser = X12Parser(X12Parser.Config.model_validate(config))
    return list(parser.parse(io.BytesIO(data), name=name))


def ctx(entries: dict[str, dict[str, str]] | None = None) -> MappingContext:
    return MappingContext(channel="edi", file_name="t.x12", inbound_id=1, received_at=datetime.now(UTC),
                          crosswalks=DictCrosswalks(entries))
