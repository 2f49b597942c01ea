"""X12 835 health care claim payment/advice (005010X221A1) -> Remittance.

One Remittance per transaction set (one payment): BPR02 amount, BPR04 method,
BPR16 date, TRN02 the check/EFT trace number, the payer (1000A N1*PR, its
TRN03 or N104 id, else the name) and payee (1000B N1*PE N104). Each 2100 loop
(CLP) is a claim payment: CLP01 the claim id (the 837's CLM01, which links the
two), CLP02 status, CLP03 charge, CLP04 paid, CLP05 patient responsibility,
CLP07 payer claim number, the claim-level CAS adjustments; each 2110 loop
(SVC) a service payment with its own CAS. A CAS carries up to six
(reason, amount, quantity) triples after its group code (CO, PR, OA, PI, CR).

Codes pass through as sent (CARC/RARC are external code lists the ERP knows).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from bridge.errors import MappingError
from mappings.base import MappingContext, Output
from mappings.canonical import Remittance, RemittanceClaim
from mappings.x12_common import X12Mapping, d8, el, money
from parsers.base import Message
from parsers.x12.model import TransactionSet
from parsers.x12.sets import loops

__all__ = ["Remittance835Mapping"]


def _cas(seg: list[str]) -> list[dict[str, str]]:
    group = el(seg, 1)
    out = []
    for i in range(2, 19, 3):
        reason = el(seg, i)
        if not reason:
            break
        adj = {"group": group, "reason": reason, "amount": el(seg, i + 1)}
        if el(seg, i + 2):
            adj["quantity"] = el(seg, i + 2)
        out.append(adj)
    return out


class Remittance835Mapping(X12Mapping):
    """835 payments with claim (CLP), service (SVC) and adjustment (CAS) detail."""

    sets = ("835",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        comp = tset.delimiters.component
        bpr = tset.first("BPR")
        trn = tset.first("TRN")
        if bpr is None or trn is None:
            raise MappingError("835 needs BPR and TRN", message.position.with_(segment="BPR" if bpr is None else "TRN"))
        bpos = message.position.with_(segment="BPR", segment_index=bpr[0])
        amount = money(bpr[1], 2, bpos)
        assert amount is not None
        payer_name = payer_id = payee = None
        for _, seg in tset.iter_segments():
            if seg[0] == "CLP":
                break
            if seg[0] == "N1":
                if el(seg, 1) == "PR":
                    payer_name, payer_id = el(seg, 2), el(seg, 4)
                elif el(seg, 1) == "PE":
                    payee = el(seg, 4) or el(seg, 2)
        payer = payer_id or el(trn[1], 3) or payer_name
        if not payer:
            raise MappingError("835 names no payer (N1*PR or TRN03)", message.position.with_(segment="N1"))
        claims = [self._claim(c, message, comp) for c in loops(tset.iter_segments(), "CLP", stop=("PLB", "SE"))]
        return [Remittance(
            trace_number=el(trn[1], 2), payer=payer, payee=payee, payment_amount=amount,
            payment_method=el(bpr[1], 4) or None,
            payment_date=d8(el(bpr[1], 16), bpos, "BPR16"), claims=claims, control_number=tset.control_path,
            source_channel=ctx.channel,
        )]

    def _claim(self, loop: list[tuple[int, list[str]]], message: Message, comp: str) -> RemittanceClaim:
        p, clp = loop[0]
        pos = message.position
        adjustments: list[dict[str, str]] = []
        services: list[dict[str, object]] = []
        current: dict[str, object] | None = None
        for sp, seg in loop[1:]:
            tag = seg[0]
            if tag == "SVC":
                proc = el(seg, 1).split(comp)
                mpos = message.position
                current = {"procedure": proc[1] if len(proc) > 1 else proc[0],
                           "charge": str(money(seg, 2, mpos, index=sp)),
                           "paid": str(money(seg, 3, mpos, required=False, index=sp) or Decimal(0)),
                           "units": el(seg, 5) or None, "adjustments": []}
                services.append(current)
            elif tag == "CAS":
                items = _cas(seg)
                if current is None:
                    adjustments.extend(items)
                else:
                    current["adjustments"].extend(items)  # type: ignore[attr-defined]
        charge = money(clp, 3, pos, index=p)
        paid = money(clp, 4, pos, index=p)
        assert charge is not None and paid is not None
        return RemittanceClaim(
            claim_id=el(clp, 1), status=el(clp, 2), charge=charge, paid=paid,
            patient_responsibility=money(clp, 5, pos, required=False, index=p), payer_claim_number=el(clp, 7) or None,
            adjustments=adjustments, services=services,
        )
