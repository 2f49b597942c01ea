"""What the HL7 v2 mappings share: date-times (DTM/TS), identifiers, message-type checks.

Owns the reading of HL7 data types the mappings need (HL7 v2.5.1 chapter 2A:
DTM/TS, CX for patient identifiers, XCN for providers, CP/MO for money) and
the error a channel raises for a message type it does not map. The field
meanings per message type stay in ``hl7_dft_p03``, ``hl7_adt`` and ``hl7_mfn``.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from bridge.errors import MappingError, Position
from mappings.convert import finite_decimal, zone
from parsers import hl7
from parsers.base import Message as Envelope

__all__ = ["UnmappedMessageType", "hl7_datetime", "hl7_decimal", "hl7_message", "mrn", "value_near"]


class UnmappedMessageType(MappingError):
    """The channel's mapping does not handle this message type (it is landed, stored and reported).

    ``kind`` is stored with the failure, so the MLLP source can ACK it AA or AE
    as the channel says (``unknown_type_ack``).
    """

    kind = "message_type"


def hl7_message(envelope: Envelope, accepted: tuple[str, ...], mapping: str) -> hl7.Message:
    """The parsed message, or UnmappedMessageType when its MSH-9 is not among ``accepted``.

    ``accepted`` holds ``"DFT^P03"``-style types; an entry without a trigger
    event (``"ADT"``) accepts every event of that message code.
    """
    msg = envelope.data
    if not isinstance(msg, hl7.Message):
        raise MappingError(f"mapping {mapping} needs an HL7 v2 message (is the channel's parser hl7?)",
                           envelope.position)
    mtype = msg.type
    code = mtype.split("^", 1)[0]
    if mtype not in accepted and code not in accepted:
        raise UnmappedMessageType(f"message type {mtype} is not mapped by {mapping} (maps {', '.join(accepted)})",
                                  envelope.position.with_(segment="MSH", segment_index=1, field="MSH-9"),
                                  key=mtype)
    return msg


def hl7_datetime(raw: str, *, tz: str, field: str, position: Position) -> datetime | None:
    """An HL7 DTM/TS value (``YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]``) as aware UTC, or None if empty.

    A value without an offset is read in the sender's time zone ``tz``.
    """
    text = raw.strip()
    if not text:
        return None
    try:
        return _dtm(text, tz)
    except ValueError as exc:
        raise MappingError(f"{field} {exc}", position.with_(field=field)) from None


@functools.lru_cache(maxsize=4096)
def _dtm(text: str, tz: str) -> datetime:
    # cached: a batch repeats the same few posting and transaction times many times
    offset = None
    for sign in ("+", "-"):
        at = text.find(sign, 4)
        if at > 0:
            off = text[at + 1 :]
            text = text[:at]
            if len(off) != 4 or not off.isdigit():
                raise ValueError("has a bad time-zone offset (expected +/-HHMM)")
            minutes = int(off[:2]) * 60 + int(off[2:])
            offset = timezone(timedelta(minutes=minutes if sign == "+" else -minutes))
            break
    frac = ""
    if "." in text:
        text, frac = text.split(".", 1)
    if not text.isdigit() or len(text) not in (4, 6, 8, 10, 12, 14) or (frac and not frac.isdigit()):
        raise ValueError("is not an HL7 date-time (YYYYMMDDHHMMSS)")
    micro = int((frac + "000000")[:6]) if frac else 0
    try:
        value = datetime(int(text[0:4]), int(text[4:6] or 1), int(text[6:8] or 1), int(text[8:10] or 0),
                         int(text[10:12] or 0), int(text[12:14] or 0), micro, tzinfo=offset or zone(tz))
    except ValueError:
        raise ValueError("is not a valid date-time") from None
    return value.astimezone(UTC)


def hl7_decimal(raw: str, *, field: str, position: Position, required: bool = False) -> Decimal | None:
    text = raw.strip()
    if not text:
        if required:
            raise MappingError(f"{field} is empty", position.with_(field=field))
        return None
    return finite_decimal(text, field=field, position=position)


def mrn(msg: hl7.Message, identifier_type: str = "MR") -> str | None:
    """The medical record number: the PID-3 repetition whose CX.5 is ``identifier_type``, else the first."""
    pid = msg.segment("PID")
    if pid is None:
        return None
    # read in place (Segment.value per repetition): no Field/Repetition objects for a field of one or two
    count = pid.raw_value(3).count(msg.encoding.repetition) + 1
    for rep in range(1, count + 1):
        number = pid.value(3, 1, repetition=rep)
        if number and pid.value(3, 5, repetition=rep) == identifier_type:
            return number
    return pid.value(3, 1) or None


def value_near(msg: hl7.Message, anchor: hl7.Segment, ref: str) -> str:
    """A value by reference, read relative to ``anchor`` (an FT1, an MFE).

    ``"FT1-29.1"`` reads the anchor itself when its id matches; any other
    segment id (a Z-segment like ``"ZFT-2.1"``) is looked up among the
    segments after the anchor, up to the next segment with the anchor's id.
    """
    sid, _ordinal, number, comp, sub = hl7.parse_ref(ref)
    if sid == anchor.id:
        return anchor.value(number, comp, sub)
    segs = msg.all_segments
    for seg in segs[anchor.index + 1 :]:
        if seg.id == anchor.id:
            break
        if seg.id == sid:
            return seg.value(number, comp, sub)
    # a header segment (PV1, PID) read from the message
    if sid in ("MSH", "EVN", "PID", "PV1", "PV2"):
        header = msg.segment(sid)
        return "" if header is None else header.value(number, comp, sub)
    return ""
