"""Inbound X12 999 / 997: a partner's functional acknowledgment of an interchange we sent.

Each AK1 group (AK101 functional id, AK102 the group control number we sent)
becomes one outbox event ``edi.functional_ack.received`` whose ``data`` carries
``partner`` (the mapping's ``acks.partner``), ``sender`` (ISA05:ISA06),
``kind`` (999/997), ``status`` (AK901: A accepted, E accepted with errors, P
partially accepted, R rejected), ``interchange_control`` and per set
``sets`` (AK202 control, IK501/AK501 status, IK502-IK506 codes). bridge
writes GS06 equal to ISA13 in what it sends (see ``outbox.x12_outbound``), so
AK102 names the interchange: ``interchange_control`` is AK102 as 9 digits.
That is the contract ``/v1/purchase-orders/{n}`` reads for its ``accepted`` /
``rejected`` step. An acknowledgment is never acknowledged back.
"""

from __future__ import annotations

from collections.abc import Sequence

from mappings.base import EventDraft, MappingContext, Output
from mappings.x12_common import X12Mapping, el
from parsers.base import Message
from parsers.x12.model import TransactionSet

__all__ = ["FunctionalAck999Mapping"]


class FunctionalAck999Mapping(X12Mapping):
    """999 and 997 from partners, as ``edi.functional_ack.received`` events."""

    sets = ("999", "997")

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        ic = tset.interchange
        out: list[Output] = []
        group: dict[str, object] | None = None
        current: dict[str, object] | None = None
        for _p, seg in tset.iter_segments():
            tag = seg[0]
            if tag == "AK1":
                ctl = el(seg, 2)
                group = {"functional_id": el(seg, 1), "group_control": ctl,
                         "interchange_control": f"{int(ctl):09d}" if ctl.isdigit() else ctl, "sets": []}
            elif tag == "AK2" and group is not None:
                current = {"set": el(seg, 1), "control": el(seg, 2)}
                group["sets"].append(current)  # type: ignore[attr-defined]
            elif tag in ("IK5", "AK5") and current is not None:
                current["status"] = el(seg, 1)
                current["codes"] = [c for c in seg[2:7] if c]
            elif tag == "AK9" and group is not None:
                out.append(EventDraft("edi.functional_ack.received", "edi_interchange",
                                      f"{self.config.acks.partner or ic.sender}:{group['interchange_control']}", {
                                          "partner": self.config.acks.partner,
                                          "sender": f"{ic.sender_qualifier}:{ic.sender}",
                                          "kind": tset.id, "status": el(seg, 1), **group,
                                          "accepted": el(seg, 4), "received": el(seg, 3),
                                          "ack_control": tset.control_path}))
                group = current = None
        return out
