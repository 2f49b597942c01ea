"""The X12 nouns the parser hands to mappings: Interchange, FunctionalGroup, TransactionSet.

Also the per-interchange report the acknowledgments are built from
(:class:`InterchangeReport`, with :class:`GroupReport`, :class:`SetReport`,
:class:`SegmentIssue`, :class:`ElementIssue`), in the standard's own codes:
TA1 note codes (TA105), 999 IK3/IK4/IK5/AK9 codes (005010X231A1), which 997
AK3/AK4/AK5/AK9 (004010X... 997) share for the codes used here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from parsers.x12.tokenizer import Delimiters

__all__ = [
    "ElementIssue",
    "FunctionalGroup",
    "GroupReport",
    "Interchange",
    "InterchangeReport",
    "SegmentIssue",
    "SetReport",
    "TransactionSet",
]


@dataclass(slots=True)
class Interchange:
    """ISA fields (X12.5): who sent it to whom, its control number and what it asks for."""

    sender_qualifier: str
    sender: str
    receiver_qualifier: str
    receiver: str
    date: str
    time: str
    control: str
    version: str
    ack_requested: str
    usage: str
    delimiters: Delimiters

    @classmethod
    def from_isa(cls, els: list[str], delimiters: Delimiters) -> Interchange:
        def g(i: int) -> str:
            return els[i].strip() if i < len(els) else ""
        return cls(g(5), g(6), g(7), g(8), g(9), g(10), g(13), g(12), g(14), g(15), delimiters)


@dataclass(slots=True)
class FunctionalGroup:
    """GS fields (X12.6): functional identifier, application ids, control number, version."""

    functional_id: str
    sender: str
    receiver: str
    date: str
    time: str
    control: str
    agency: str
    version: str

    @classmethod
    def from_gs(cls, els: list[str]) -> FunctionalGroup:
        def g(i: int) -> str:
            return els[i].strip() if i < len(els) else ""
        return cls(g(1), g(2), g(3), g(4), g(5), g(6), g(7), g(8))


class TransactionSet:
    """One ST..SE transaction set with its envelopes.

    ``raw`` holds the segment texts ST..SE; :attr:`segments` splits them into
    element lists on first use, :meth:`iter_segments` one at a time (big sets:
    837s of thousands of claims map claim by claim without holding every
    segment as a list). Positions are 1-based from ST, as in 999 IK302 / 997 AK302.
    """

    __slots__ = ("_segments", "group", "id", "implementation", "interchange", "control", "raw")

    def __init__(self, id: str, control: str, implementation: str, interchange: Interchange,  # noqa: A002
                 group: FunctionalGroup, raw: list[str]) -> None:
        self.id = id
        self.control = control
        self.implementation = implementation
        self.interchange = interchange
        self.group = group
        self.raw = raw
        self._segments: list[list[str]] | None = None

    @property
    def segments(self) -> list[list[str]]:
        if self._segments is None:
            sep = self.interchange.delimiters.element
            self._segments = [s.split(sep) for s in self.raw]
        return self._segments

    def iter_segments(self) -> Iterator[tuple[int, list[str]]]:
        sep = self.interchange.delimiters.element
        for i, s in enumerate(self.raw, start=1):
            yield i, s.split(sep)

    @property
    def delimiters(self) -> Delimiters:
        return self.interchange.delimiters

    @property
    def control_path(self) -> str:
        return f"{self.interchange.control}/{self.group.control}/{self.control}"

    def components(self, value: str) -> list[str]:
        return value.split(self.interchange.delimiters.component)

    def repetitions(self, value: str) -> list[str]:
        rep = self.interchange.delimiters.repetition
        return value.split(rep) if rep else [value]

    def find(self, seg_id: str) -> Iterator[tuple[int, list[str]]]:
        """(position, segment) of every ``seg_id`` segment."""
        prefix = seg_id + self.interchange.delimiters.element
        sep = self.interchange.delimiters.element
        for i, s in enumerate(self.raw, start=1):
            if s.startswith(prefix) or s == seg_id:
                yield i, s.split(sep)

    def first(self, seg_id: str) -> tuple[int, list[str]] | None:
        return next(self.find(seg_id), None)


@dataclass(slots=True)
class ElementIssue:
    """999 IK4 / 997 AK4: IK401 position in segment, IK403 error code (X12 table 621)."""

    position: int
    code: str
    reference: str = ""


@dataclass(slots=True)
class SegmentIssue:
    """999 IK3 / 997 AK3: segment id, position in set, loop id, IK304 code (X12 table 620)."""

    segment: str
    position: int
    code: str | None
    loop: str = ""
    elements: list[ElementIssue] = field(default_factory=list)


@dataclass(slots=True)
class SetReport:
    """999 AK2 + IK5 / 997 AK2 + AK5: one set's verdict; ``codes`` are IK502-IK506 (table 717)."""

    id: str
    control: str
    implementation: str
    status: str = "A"
    codes: list[str] = field(default_factory=list)
    issues: list[SegmentIssue] = field(default_factory=list)


@dataclass(slots=True)
class GroupReport:
    """999/997 AK1 + AK9: ``status`` A/P/R/E, ``codes`` AK905-AK909 (table 716)."""

    group: FunctionalGroup
    declared: int | None = None
    sets: list[SetReport] = field(default_factory=list)
    status: str = "A"
    codes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.sets if s.status in ("A", "E"))


@dataclass(slots=True)
class InterchangeReport:
    """What one interchange needs acknowledged; ``note`` is TA105, ``status`` TA104 (A/E/R)."""

    interchange: Interchange
    groups: list[GroupReport] = field(default_factory=list)
    status: str = "A"
    note: str = "000"
    reason: str | None = None
    file: str | None = None
    ordinal: int = 1

    @property
    def rejected(self) -> bool:
        return self.status == "R"
