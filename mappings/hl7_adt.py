"""ADT A01/A03/A04/A08/A11/A13 (HL7 v2.5.1 chapter 3) -> Encounter, only what the ERP needs.

One message is one :class:`~mappings.canonical.Encounter` keyed by
``sender:visit number`` (PV1-19.1). Read: patient class PV1-2, location
PV1-3 (point of care, room, bed), department PV1-3.1 (``department_field``)
and, through the ``department`` crosswalk, the cost center; admit and
discharge date-times PV1-44/PV1-45 (EVN-6, then EVN-2, when the event's own
time is missing); the MRN (PID-3, MR repetition). No clinical detail
(diagnoses, allergies, names) is stored.

Status by trigger event (table 0003):

- A01 admit -> ``admitted``; A04 register -> ``registered``;
- A03 discharge -> ``discharged``;
- A08 update -> derived from the data (discharged when PV1-45 is set);
- A11 cancel admit/visit -> ``cancelled``; A13 cancel discharge -> back to
  ``admitted`` with no discharge time.

The record is upserted whole, so an A13 after an A03 clears the discharge,
and an A11 leaves a visible ``cancelled`` encounter rather than a deletion.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from bridge.errors import MappingError
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import Encounter
from mappings.hl7_common import hl7_datetime, hl7_message, mrn, value_near
from parsers.base import Message

__all__ = ["AdtMapping", "AdtMappingConfig"]

_STATUS = {"A01": "admitted", "A04": "registered", "A03": "discharged", "A11": "cancelled", "A13": "admitted"}


class AdtMappingConfig(MappingConfig):
    timezone: str = "UTC"
    #: the field holding the department (nursing unit) for the cost-center crosswalk
    department_field: str = "PV1-3.1"
    #: a department with no crosswalk entry quarantines the message (else cost_center stays empty)
    require_cost_center: bool = False
    message_types: list[str] = Field(default_factory=lambda: ["ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08",
                                                              "ADT^A11", "ADT^A13"])


class AdtMapping(Mapping):
    """ADT admit/discharge/register/update/cancel events to Encounter records."""

    Config = AdtMappingConfig
    config: AdtMappingConfig

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        cfg = self.config
        msg = hl7_message(message, tuple(cfg.message_types), "hl7_adt")
        evn = msg.segment("EVN")
        event = msg.msh.value(9, 2) or (evn.value(1) if evn is not None else "")
        pv1 = msg.segment("PV1")
        if pv1 is None:
            raise MappingError("ADT message has no PV1 segment", message.position.with_(segment="PV1"))
        visit = pv1.value(19, 1)
        if not visit:
            raise MappingError("PV1-19 (visit number) is empty", pv1.position(19))
        event_time = ""
        if evn is not None:
            event_time = evn.value(6) or evn.value(2)
        pos = pv1.position()
        admitted = hl7_datetime(pv1.value(44), tz=cfg.timezone, field="PV1-44", position=pos)
        discharged = hl7_datetime(pv1.value(45), tz=cfg.timezone, field="PV1-45", position=pos)
        if event == "A01" and admitted is None:
            admitted = hl7_datetime(event_time, tz=cfg.timezone, field="EVN-6", position=pos)
        if event == "A03" and discharged is None:
            discharged = hl7_datetime(event_time, tz=cfg.timezone, field="EVN-6", position=pos)
        if event == "A13":
            discharged = None
        status = _STATUS.get(event)
        if status is None:  # A08 and other updates: what the data says
            status = "discharged" if discharged else ("admitted" if admitted else "registered")
        department = value_near(msg, pv1, cfg.department_field) or None
        cost_center = None
        if department:
            if cfg.require_cost_center:
                cost_center = ctx.crosswalks.lookup("department", department, position=pos,
                                                    field=cfg.department_field)
            else:
                cost_center = ctx.crosswalks.find("department", department)
        location = "^".join(p for p in (pv1.value(3, 1), pv1.value(3, 2), pv1.value(3, 3)) if p) or None
        return [Encounter(
            visit_number=visit, sender=msg.sender, status=status, patient_class=pv1.value(2) or None,
            location=location, department=department, cost_center=cost_center, admitted_at=admitted,
            discharged_at=discharged, mrn=mrn(msg), last_event=event or None, source_channel=ctx.channel,
        )]

