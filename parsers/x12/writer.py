"""Writing X12: segments with a partner's delimiters, and whole interchanges with correct envelopes.

:func:`render_interchange` builds ISA/GS/ST..SE/GE/IEA around the segments it
is given and computes every count (SE01 segments ST..SE, GE01 sets, IEA01
groups) and matching trailer control number (X12.5/X12.6). The ISA is padded
to its fixed widths, so it is exactly 106 characters. Control numbers are the
caller's (a per-partner database sequence, see ``outbox.x12_outbound``).
Trailing empty elements are dropped, as X12.6 requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from parsers.x12.tokenizer import ISA_LENGTH, Delimiters

__all__ = ["Envelope", "GroupDraft", "SetDraft", "render_interchange", "render_segment"]


def render_segment(els: Sequence[str], d: Delimiters) -> str:
    items = [str(e) for e in els]
    while len(items) > 1 and items[-1] == "":
        items.pop()
    return d.element.join(items) + d.segment


@dataclass(slots=True)
class SetDraft:
    """A transaction set's body: the segments between ST and SE."""

    id: str
    control: str
    segments: list[list[str]]
    implementation: str | None = None


@dataclass(slots=True)
class GroupDraft:
    functional_id: str
    sender: str
    receiver: str
    control: int
    version: str
    sets: list[SetDraft] = field(default_factory=list)


@dataclass(slots=True)
class Envelope:
    """The ISA of an outbound interchange."""

    sender_qualifier: str
    sender: str
    receiver_qualifier: str
    receiver: str
    control: int
    version: str = "00501"
    ack_requested: bool = False
    usage: str = "P"
    delimiters: Delimiters = field(default_factory=Delimiters)
    line_break: bool = False


def _pad(value: str, width: int) -> str:
    if len(value) > width:
        raise ValueError(f"ISA value is longer than {width} characters")
    return value.ljust(width)


def render_interchange(env: Envelope, groups: Sequence[GroupDraft], *, now: datetime,
                       ta1: Sequence[str] | None = None) -> str:
    """The whole interchange as text. ``ta1``: a TA1 segment's elements, placed before any group."""
    d = env.delimiters
    if env.version >= "00501":
        rep = d.repetition or "^"
        d = Delimiters(d.element, d.component, rep, d.segment)
        isa11 = rep
    else:
        isa11 = "U"
    term = d.segment + ("\n" if env.line_break else "")
    dd = Delimiters(d.element, d.component, d.repetition, term)
    isa = [
        "ISA", "00", " " * 10, "00", " " * 10,
        _pad(env.sender_qualifier, 2), _pad(env.sender, 15), _pad(env.receiver_qualifier, 2),
        _pad(env.receiver, 15), now.strftime("%y%m%d"), now.strftime("%H%M"), isa11, env.version,
        f"{env.control:09d}", "1" if env.ack_requested else "0", env.usage, d.component,
    ]
    isa_text = d.element.join(isa) + d.segment
    assert len(isa_text) == ISA_LENGTH, "ISA must be 106 characters"
    out = [isa_text + ("\n" if env.line_break else "")]
    if ta1:
        out.append(render_segment(ta1, dd))
    for g in groups:
        out.append(render_segment(["GS", g.functional_id, g.sender, g.receiver, now.strftime("%Y%m%d"),
                                   now.strftime("%H%M"), str(g.control), "X", g.version], dd))
        for s in g.sets:
            st = ["ST", s.id, s.control] + ([s.implementation] if s.implementation else [])
            out.append(render_segment(st, dd))
            for seg in s.segments:
                out.append(render_segment(seg, dd))
            out.append(render_segment(["SE", str(len(s.segments) + 2), s.control], dd))
        out.append(render_segment(["GE", str(len(g.sets)), str(g.control)], dd))
    out.append(render_segment(["IEA", str(len(groups)), f"{env.control:09d}"], dd))
    return "".join(out)
