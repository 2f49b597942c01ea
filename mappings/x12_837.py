"""X12 837 health care claims (837P 005010X222A1, 837I 005010X223A2) -> Claim.

One Claim per 2300 loop (CLM) with its 2400 service lines: SV1 (professional:
SV101 composite procedure HC:code:modifiers, SV102 charge, SV104 units) or SV2
(institutional: SV201 revenue code, SV202 procedure, SV203 charge, SV205
units), the line's DTP*472 service date. Parties by the HL hierarchy: the
billing provider (2010AA NM1*85 NM109) of the 20-level HL, the payer (2010BB
NM1*PR NM109) and member (2010BA NM1*IL NM109) of the 22-level HL (a 23-level
patient HL inherits them); the submitter (1000A NM1*41) and receiver (1000B
NM1*40) of the header.

The set is walked once, segment by segment, and each claim is built when the
next CLM, HL or SE closes it: an 837 of 5,000 claims (the guide's cap per
set) never sits in memory as element lists.

No crosswalk: claims carry payer and provider ids as sent (the revenue-cycle
system owns their meaning). CLM05-1 is the facility code. Claim ids are
``submitter:CLM01``; the 835's CLP01 echoes CLM01.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation

from bridge.errors import MappingError, Position
from mappings.base import MappingContext, Output
from mappings.canonical import Claim
from mappings.x12_common import X12Mapping, d8, el
from parsers.base import Message
from parsers.x12.model import TransactionSet

__all__ = ["Claim837Mapping"]


class _Party:
    __slots__ = ("billing", "member", "payer")

    def __init__(self, billing: str | None = None, payer: str | None = None, member: str | None = None) -> None:
        self.billing, self.payer, self.member = billing, payer, member


class Claim837Mapping(X12Mapping):
    """837P/837I claims with their service lines."""

    sets = ("837",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        comp = tset.delimiters.component
        institutional = message.meta.get("variant") == "837I" or "X223" in tset.implementation
        claim_type = "institutional" if institutional else "professional"
        submitter: str | None = None
        receiver: str | None = None
        control = tset.control_path
        channel = ctx.channel
        pos0 = message.position
        hl: dict[str, tuple[str, _Party]] = {}  # HL01 -> (level, parties)
        party = _Party()
        level = ""
        claims: list[Output] = []
        clm: list[str] | None = None
        clm_pos = 0
        # lines stay dicts: Claim validates them once, as ClaimLine, with the claim
        lines: list[dict[str, object]] = []
        line: dict[str, object] | None = None
        line_no = 0
        service: date | None = None

        def close() -> None:
            nonlocal clm, line
            if clm is None:
                return
            if line is not None:
                lines.append(line)
                line = None
            try:
                total = Decimal(el(clm, 2))
            except InvalidOperation:
                raise MappingError("CLM02 is not a number", pos0.with_(segment="CLM", segment_index=clm_pos,
                                                                       field="CLM02")) from None
            claims.append(Claim(
                claim_id=el(clm, 1), claim_type=claim_type, submitter=submitter or tset.interchange.sender,
                receiver=receiver, billing_provider=party.billing, payer=party.payer, total_charge=total,
                facility_code=el(clm, 5).split(comp)[0] or None, patient_control_number=el(clm, 1),
                member_id=party.member, service_date=service, lines=list(lines),  # type: ignore[arg-type]
                control_number=control,
                source_channel=channel,
            ))
            clm = None

        # the hot loop (15 or so segments per claim): texts split in place, no generator
        sep = tset.delimiters.element
        for p, text in enumerate(tset.raw, 1):
            seg = text.split(sep)
            tag = seg[0]
            n = len(seg)
            if clm is not None:
                if tag == "LX":
                    line_no = int(seg[1]) if n > 1 and seg[1].isdigit() else line_no + 1
                    continue
                if tag == "SV1" or tag == "SV2":
                    if line is not None:
                        lines.append(line)
                    line = self._line(tag, seg, comp, line_no, pos0, p)
                    continue
                if tag == "DTP":
                    qual = seg[1] if n > 1 else ""
                    if qual == "472" or (qual == "434" and service is None):
                        when = d8(seg[3] if n > 3 else "", pos0, "DTP03", index=p)
                        if line is not None and qual == "472":
                            line["service_date"] = when
                        if service is None:
                            service = when
                    continue
                if tag not in ("CLM", "HL", "SE"):
                    continue
                close()
            if tag == "CLM":
                clm, clm_pos, lines, line, line_no, service = seg, p, [], None, 0, None
            elif tag == "HL":
                parent = hl.get(el(seg, 2))
                level = el(seg, 3)
                inherited = parent[1] if parent else _Party()
                party = _Party(inherited.billing, inherited.payer, inherited.member)
                hl[el(seg, 1)] = (level, party)
            elif tag == "NM1":
                role = seg[1] if n > 1 else ""
                nm109 = seg[9] if n > 9 else ""
                if role == "85" and level == "20":
                    party.billing = nm109 or None
                elif role == "PR":
                    party.payer = nm109 or el(seg, 3) or None
                elif role == "IL":
                    party.member = nm109 or None
                elif role == "41" and not hl:
                    submitter = nm109 or None
                elif role == "40" and not hl:
                    receiver = nm109 or None
        close()
        if not claims:
            raise MappingError("837 has no CLM (2300 loop) under a subscriber or patient HL",
                               pos0.with_(segment="CLM"))
        return claims

    @staticmethod
    def _line(tag: str, seg: list[str], comp: str, line_no: int, pos: Position, index: int) -> dict[str, object]:
        if len(seg) < 6:
            seg = seg + [""] * (6 - len(seg))  # SV101..SV105 / SV201..SV205, absent ones empty
        try:
            if tag == "SV1":
                proc = seg[1].split(comp)
                units = seg[4]
                return {"line_number": line_no, "procedure": proc[1] if len(proc) > 1 else proc[0],
                        "modifiers": [m for m in proc[2:6] if m], "charge": Decimal(seg[2]),
                        "units": Decimal(units) if units else None}
            proc = seg[2].split(comp)
            units = seg[5]
            return {"line_number": line_no, "revenue_code": seg[1] or None,
                    "procedure": (proc[1] if len(proc) > 1 else proc[0]) or seg[1],
                    "modifiers": [m for m in proc[2:6] if m], "charge": Decimal(seg[3]),
                    "units": Decimal(units) if units else None}
        except InvalidOperation:
            raise MappingError(f"{tag} charge or units is not a number",
                               pos.with_(segment=tag, segment_index=index)) from None
