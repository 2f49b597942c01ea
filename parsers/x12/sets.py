"""Transaction sets bridge recognises, and loop / HL-hierarchy helpers over their segments.

Recognition is by ST01 (X12 table 143) plus the implementation convention in
ST03 / GS08 (837P ``005010X222A1``, 837I ``005010X223A2``, 835
``005010X221A1``). Each :class:`SetSpec` names the functional group (GS01,
table 479) the set belongs in, the segments without which it cannot be
mapped (reported as 999 IK304 code 3, "required segment missing"), and the
element rules checked while parsing (IK403 code 1 "required data element
missing", 6 "invalid character", 3 "too many data elements").

These are the rules bridge needs to map a set, not the full implementation
guides; HIPAA guide validation is pyx12's (``validate: hipaa``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["MAX_ELEMENTS", "RULES", "SETS", "HLNode", "SetSpec", "hl_tree", "is_number", "loops", "segment_checks",
           "variant"]


@dataclass(frozen=True, slots=True)
class SetSpec:
    id: str
    name: str
    functional_id: str
    required: tuple[str, ...]
    loop_starts: tuple[str, ...] = ()
    variants: dict[str, str] = field(default_factory=dict)


SETS: dict[str, SetSpec] = {
    "837": SetSpec("837", "Health Care Claim", "HC", ("BHT", "HL", "CLM"), ("HL", "CLM", "LX"),
                   {"X222": "837P", "X223": "837I", "X224": "837D"}),
    "835": SetSpec("835", "Health Care Claim Payment/Advice", "HP", ("BPR", "TRN", "N1"), ("N1", "LX", "CLP", "SVC")),
    "850": SetSpec("850", "Purchase Order", "PO", ("BEG", "PO1"), ("N1", "PO1")),
    "855": SetSpec("855", "Purchase Order Acknowledgment", "PR", ("BAK",), ("N1", "PO1", "ACK")),
    "856": SetSpec("856", "Ship Notice/Manifest", "SH", ("BSN", "HL"), ("HL",)),
    "810": SetSpec("810", "Invoice", "IN", ("BIG", "TDS"), ("N1", "IT1", "SAC")),
    "832": SetSpec("832", "Price/Sales Catalog", "SC", ("BCT", "LIN"), ("LIN",)),
    # acknowledgments a partner returns for our outbound sets: recognised, never acknowledged
    "999": SetSpec("999", "Implementation Acknowledgment", "FA", ("AK1",), ("AK2",)),
    "997": SetSpec("997", "Functional Acknowledgment", "FA", ("AK1",), ("AK2",)),
}

#: element rules by segment: {position: "R" required, "N" numeric, "RN" both}
RULES: dict[str, dict[int, str]] = {
    "BHT": {1: "R", 2: "R"},
    "HL": {1: "R", 3: "R"},
    "CLM": {1: "R", 2: "RN", 5: "R"},
    "SV1": {1: "R", 2: "RN", 4: "N"},
    "SV2": {1: "R", 3: "N", 5: "N"},
    "LX": {1: "RN"},
    "BPR": {1: "R", 2: "RN"},
    "TRN": {1: "R", 2: "R"},
    "CLP": {1: "R", 2: "R", 3: "RN", 4: "RN", 5: "N"},
    "SVC": {1: "R", 2: "RN", 3: "N"},
    "CAS": {1: "R", 2: "R", 3: "RN"},
    "BEG": {1: "R", 2: "R", 3: "R", 5: "R"},
    "PO1": {2: "RN", 3: "R", 4: "N"},
    "CTT": {1: "RN"},
    "BAK": {1: "R", 2: "R", 3: "R"},
    "ACK": {1: "R", 2: "N"},
    "BSN": {1: "R", 2: "R"},
    "SN1": {2: "RN"},
    "BIG": {1: "R", 2: "R"},
    "IT1": {2: "RN", 4: "RN"},
    "TDS": {1: "RN"},
    "SAC": {1: "R", 5: "N"},
    "BCT": {1: "R"},
    "LIN": {2: "R", 3: "R"},
    "CTP": {3: "N"},
}

#: most elements a segment may have (a count beyond it means a separator inside data)
MAX_ELEMENTS: dict[str, int] = {
    "ST": 3, "SE": 2, "BHT": 6, "NM1": 12, "N1": 6, "N2": 2, "N3": 2, "N4": 7, "PER": 9, "REF": 4, "DTP": 3,
    "DTM": 6, "HL": 4, "PRV": 6, "SBR": 9, "PAT": 9, "DMG": 11, "CLM": 20, "HI": 12, "LX": 1, "SV1": 21,
    "SV2": 10, "AMT": 3, "BPR": 21, "TRN": 4, "CLP": 14, "CAS": 19, "SVC": 7, "PLB": 14, "LQ": 2, "MIA": 24,
    "MOA": 9, "QTY": 4, "BEG": 12, "PO1": 25, "PID": 9, "CTT": 7, "BAK": 12, "ACK": 29, "BSN": 7, "TD1": 10,
    "TD5": 15, "PRF": 7, "LIN": 31, "SN1": 8, "SN2": 3, "MAN": 6, "BIG": 10, "IT1": 25, "TDS": 4, "SAC": 16,
    "ISS": 7, "BCT": 10, "CTP": 11, "PO4": 19, "CUR": 21, "ITD": 15, "FOB": 9, "TXI": 10, "CAD": 10,
}

SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{1,2}\Z")


def is_number(value: str) -> bool:
    """X12 R (decimal) / N (implied decimal) type: digits, one optional point, optional minus."""
    if value.isdigit():
        return True
    body = value[1:] if value[0] == "-" else value
    whole, _, frac = body.partition(".")
    return (whole.isdigit() or not whole) and (frac.isdigit() or not frac) and bool(whole or frac)


#: a subset of what :func:`is_number` accepts (ASCII digits only), for :func:`segment_checks`
_NUMBER = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"


@lru_cache(maxsize=16)
def segment_checks(sep: str) -> dict[str, tuple[int | None, re.Pattern[str] | None, dict[int, str]]]:
    """Per segment id, for element separator ``sep``: (:data:`MAX_ELEMENTS`, a fast pattern, :data:`RULES`);
    the pattern is None for a segment without rules.

    The pattern matches a segment text that certainly passes its :data:`RULES`
    (required elements present, numeric ones numbers), in one C-level match;
    only a segment it does not match is split and judged element by element,
    which also finds the element to report. It may refuse a valid segment
    (one that ends before an optional numeric element, say): that only costs
    the slow path, never a wrong verdict.
    """
    e = re.escape(sep)
    value, present = f"[^{e}]*", f"[^{e}]+"
    out: dict[str, tuple[int | None, re.Pattern[str] | None, dict[int, str]]] = {
        tag: (mx, None, {}) for tag, mx in MAX_ELEMENTS.items()}
    for tag, rules in RULES.items():
        parts = [re.escape(tag)]
        for i in range(1, max(rules) + 1):
            rule = rules.get(i)
            parts.append(e + {None: value, "R": present, "N": f"(?:{_NUMBER})?", "RN": _NUMBER}[rule])
        pattern = re.compile("".join(parts) + f"(?:{e}.*)?\\Z", re.DOTALL)
        out[tag] = (MAX_ELEMENTS.get(tag), pattern, rules)
    return out


def variant(set_id: str, implementation: str) -> str:
    """``837P`` / ``837I`` from ST03 or GS08, else the set id itself."""
    spec = SETS.get(set_id)
    if spec is not None:
        for marker, name in spec.variants.items():
            if marker in implementation:
                return name
    return set_id


def loops(segments: Iterable[tuple[int, list[str]]], start: str, *, stop: Iterable[str] = ()) -> Iterator[list[tuple[int, list[str]]]]:
    """Group (position, segment) pairs into loops that begin at ``start`` segments.

    A loop runs until the next ``start`` or a ``stop`` segment (which ends it
    and is not part of it); segments before the first ``start`` are skipped.
    """
    stops = set(stop)
    current: list[tuple[int, list[str]]] | None = None
    for pos, seg in segments:
        tag = seg[0]
        if tag == start:
            if current is not None:
                yield current
            current = [(pos, seg)]
        elif tag in stops:
            if current is not None:
                yield current
            current = None
        elif current is not None:
            current.append((pos, seg))
    if current is not None:
        yield current


@dataclass(slots=True)
class HLNode:
    """One HL loop: HL01 id, HL02 parent id, HL03 level code (X12 table 735), its segments."""

    id: str
    parent: str | None
    level: str
    position: int
    segments: list[tuple[int, list[str]]] = field(default_factory=list)
    children: list[HLNode] = field(default_factory=list)

    def first(self, seg_id: str) -> list[str] | None:
        for _, seg in self.segments:
            if seg[0] == seg_id:
                return seg
        return None

    def all(self, seg_id: str) -> list[list[str]]:
        return [seg for _, seg in self.segments if seg[0] == seg_id]

    def walk(self) -> Iterator[HLNode]:
        yield self
        for child in self.children:
            yield from child.walk()


def hl_tree(segments: Iterable[tuple[int, list[str]]], *, stop: Iterable[str] = ("CTT", "SE")) -> list[HLNode]:
    """Build the HL hierarchy (837 20-loops, 856 S/O/P/I) and return its roots.

    An HL whose parent id was not seen becomes a root, so a broken hierarchy
    still maps what it can; the mapping decides whether that is an error.
    """
    stops = set(stop)
    nodes: dict[str, HLNode] = {}
    roots: list[HLNode] = []
    current: HLNode | None = None
    for pos, seg in segments:
        tag = seg[0]
        if tag == "HL":
            hid = seg[1] if len(seg) > 1 else ""
            parent = seg[2] if len(seg) > 2 and seg[2] else None
            level = seg[3] if len(seg) > 3 else ""
            current = HLNode(hid, parent, level, pos)
            nodes[hid] = current
            if parent is not None and parent in nodes:
                nodes[parent].children.append(current)
            else:
                roots.append(current)
        elif tag in stops:
            current = None
        elif current is not None:
            current.segments.append((pos, seg))
    return roots
