"""Acknowledgments for an inbound interchange: TA1, 999 (5010) and 997 (4010).

- TA1 (X12.5 interchange acknowledgment): TA101-TA103 echo ISA13, ISA09,
  ISA10; TA104 A/E/R; TA105 the note code. Sent when ISA14 is ``1`` or when
  the interchange is rejected (policy ``requested``), or per the partner's
  ``ta1`` policy. It travels in its own interchange with no groups.
- 999 (005010X231A1): AK1 (GS01, GS06, GS08), per set AK2 (ST01, ST02, ST03),
  IK3 (segment id, position from ST, loop, code), IK4 (element position,
  reference, code) and IK5 (A/E/R + codes), then AK9 (A/P/R/E, sets
  included, received, accepted, codes).
- 997 (004010): the same shape with AK3/AK4/AK5.

Functional acks answer every group except acknowledgments themselves (GS01
``FA``): an ack is never acknowledged. A rejected interchange gets only its
TA1. Envelopes swap the inbound sender and receiver; control numbers come
from the caller's ``next_control`` (a per-partner database sequence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from parsers.x12.model import GroupReport, InterchangeReport
from parsers.x12.tokenizer import Delimiters
from parsers.x12.writer import Envelope, GroupDraft, SetDraft, render_interchange

__all__ = ["AckDocument", "ack_kinds", "build_acks", "functional_ack_segments", "render_ack"]


@dataclass(frozen=True, slots=True)
class AckDocument:
    kind: str  # "TA1", "999", "997"
    control: int
    content: str
    status: str


def functional_ack_segments(g: GroupReport, *, kind: str) -> list[list[str]]:
    """The body (AK1..AK9) of a 999 or 997 answering one group."""
    grp = g.group
    body: list[list[str]] = []
    if kind == "999":
        body.append(["AK1", grp.functional_id, grp.control, grp.version])
    else:
        body.append(["AK1", grp.functional_id, grp.control])
    for s in g.sets:
        if kind == "999":
            body.append(["AK2", s.id, s.control, s.implementation or ""])
        else:
            body.append(["AK2", s.id, s.control])
        for issue in s.issues[:50]:
            body.append(["IK3" if kind == "999" else "AK3", issue.segment, str(issue.position), issue.loop,
                         issue.code or ""])
            for el in issue.elements[:10]:
                body.append(["IK4" if kind == "999" else "AK4", str(el.position), el.reference, el.code])
        trailer = "IK5" if kind == "999" else "AK5"
        body.append([trailer, s.status, *[c for c in dict.fromkeys(s.codes)][:5]])
    received = len(g.sets)
    declared = g.declared if g.declared is not None else received
    body.append(["AK9", g.status, str(declared), str(received), str(0 if g.codes else g.accepted), *g.codes[:5]])
    return body


def ack_kinds(report: InterchangeReport, *, ta1: str = "requested", functional: bool = True) -> list[str]:
    """Which acknowledgments an interchange needs, in the order they are numbered: "TA1", "999", "997"."""
    ic = report.interchange
    want_ta1 = {
        "requested": ic.ack_requested == "1" or report.status != "A",
        "always": True,
        "on_error": report.status != "A",
        "never": False,
    }[ta1]
    kinds = ["TA1"] if want_ta1 else []
    if functional and not report.rejected:
        for kind in ("999", "997"):
            if _groups(report, kind):
                kinds.append(kind)
    return kinds


def _groups(report: InterchangeReport, kind: str) -> list[GroupReport]:
    """The groups a 999 (5010) or 997 (4010) answers; never an acknowledgment's own group (FA)."""
    return [g for g in report.groups
            if g.group.functional_id != "FA" and (g.group.version[:3] >= "005") == (kind == "999")]


def _qualifier(value: str) -> str:
    value = value.strip()
    return value if 0 < len(value) <= 2 else "ZZ"


def render_ack(report: InterchangeReport, kind: str, *, next_control: Callable[[str], int], now: datetime,
               delimiters: Delimiters | None = None) -> AckDocument:
    """Render one acknowledgment of :func:`ack_kinds`; ``next_control("isa")`` / ``("gs")`` number it."""
    ic = report.interchange
    d = delimiters or Delimiters(ic.delimiters.element, ic.delimiters.component,
                                 ic.delimiters.repetition or "^", ic.delimiters.segment)
    if not d.usable():
        d = Delimiters()  # the sender's own delimiters clash (that may be why it is rejected): use the defaults
    version = ic.version if ic.version in ("00401", "00501") else ("00501" if ic.version > "00501" else "00401")
    control = next_control("isa")
    # the reply is addressed with what the received ISA said; a malformed ISA (rejected with a TA1) may hold
    # values that do not fit the reply's fixed-width ISA: a qualifier falls back to ZZ, an id is cut to 15
    env = Envelope(_qualifier(ic.receiver_qualifier), ic.receiver.strip()[:15], _qualifier(ic.sender_qualifier),
                   ic.sender.strip()[:15], control, version=version, ack_requested=False,
                   usage=ic.usage if ic.usage in ("P", "T", "I") else "P", delimiters=d)
    if kind == "TA1":
        seg = ["TA1", ic.control, ic.date, ic.time, report.status, report.note]
        return AckDocument("TA1", control, render_interchange(env, [], now=now, ta1=seg), report.status)
    mine = _groups(report, kind)
    drafts = []
    for g in mine:
        gs06 = next_control("gs")
        body = functional_ack_segments(g, kind=kind)
        impl = "005010X231A1" if kind == "999" else None
        drafts.append(GroupDraft("FA", g.group.receiver, g.group.sender, gs06, impl or "004010",
                                 [SetDraft(kind, "0001", body, impl)]))
    status = "A" if all(g.status == "A" for g in mine) else "R"
    if kind == "997":
        env.version = "00401"
    return AckDocument(kind, control, render_interchange(env, drafts, now=now), status)


def build_acks(report: InterchangeReport, *, next_control: Callable[[str], int], now: datetime,
               ta1: str = "requested", functional: bool = True,
               delimiters: Delimiters | None = None) -> list[AckDocument]:
    """Render the TA1 and the 999/997 an interchange needs (possibly none)."""
    return [render_ack(report, kind, next_control=next_control, now=now, delimiters=delimiters)
            for kind in ack_kinds(report, ta1=ta1, functional=functional)]
