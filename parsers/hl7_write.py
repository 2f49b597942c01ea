"""Writing HL7 v2: acknowledgments (ACK with MSA/ERR) and outbound DFT^P03 from Charge records.

Owns the text bridge sends: the original-mode ACK of HL7 v2.5.1 chapter 2.9
(MSA-1 AA/AE/AR from table 0008, MSA-2 echoing the sender's MSH-10, an ERR
segment saying why), and a DFT^P03 (chapter 6.4.3) built from a
:class:`~mappings.canonical.Charge`. Reading is ``parsers.hl7``; when an ACK
is sent is the MLLP source's business.

Both are plain string building with the escaping rules of chapter 2.7, which
costs microseconds; the tests check every shape against hl7apy's strict
validation, which is the referee (and is about a thousand times slower).

The ERR segment follows the version of the message acknowledged: from v2.5
on, ERR-2 (location: segment^sequence^field), ERR-3 (HL7 table 0357 error
code), ERR-4 (severity, table 0516) and ERR-8 (user message); before v2.5,
the single ERR-1 (segment^sequence^field^code&text&HL70357). Reasons are
bridge's own texts, which never quote field values.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from bridge.errors import InputError, ParseError, Position
from mappings.canonical import Charge
from parsers.hl7 import DEFAULT_ENCODING, Encoding, encoding_from_msh

__all__ = ["AckCode", "AckHeader", "build_ack", "build_dft_p03", "header_from_bytes"]

AckCode = Literal["AA", "AE", "AR"]

#: HL7 table 0357 (message error condition codes)
ERROR_CODES = {
    "parse": ("102", "Data type error"),
    "segment": ("100", "Segment sequence error"),
    "required": ("101", "Required field missing"),
    "master_data": ("103", "Table value not found"),
    "message_type": ("200", "Unsupported message type"),
    "duplicate": ("205", "Duplicate key identifier"),
    "internal": ("207", "Application internal error"),
}

_counter = itertools.count(1)
_PREFIX = f"{os.getpid() % 100000:05d}"


def _new_control_id() -> str:
    """A control id for messages bridge originates: unique per process, at most 20 characters (MSH-10 is ST 20)."""
    return f"B{datetime.now(UTC):%y%m%d%H%M%S}{_PREFIX[-3:]}{next(_counter) % 1000:03d}"


def _ts(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


@dataclass(frozen=True, slots=True)
class AckHeader:
    """What an ACK echoes from the message it acknowledges (MSH-3..6, 9, 10, 11, 12)."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"
    encoding: Encoding = DEFAULT_ENCODING


_SAFE = re.compile(r"[^\x20-\x7e]")


def header_from_bytes(data: bytes) -> AckHeader | None:
    """Read what an ACK needs from the raw bytes of a message, even one that cannot be parsed.

    Only the MSH is looked at, as ASCII; returns None when there is no
    readable MSH (then the ACK carries an empty MSA-2).
    """
    start = data.find(b"MSH")
    if start < 0 or len(data) < start + 8:
        return None
    end = len(data)
    for term in (b"\r", b"\n"):
        at = data.find(term, start)
        if 0 <= at < end:
            end = at
    msh = data[start:end][:4096].decode("ascii", errors="replace")
    if len(msh) < 4:  # the segment ends right after its name
        return None
    fs = msh[3]
    if fs.isalnum() or fs.isspace():
        return None
    parts = msh.split(fs)
    try:
        own: Encoding | None = encoding_from_msh(data[start:end])  # the parser's own rule
    except ParseError:
        own = None
    # MSH-2 unreadable: the standard encoding characters, with the message's field separator if printable
    enc = _ack_encoding(own or (Encoding(fs) if " " < fs <= "~" else DEFAULT_ENCODING))
    # values go back as they came when the ACK speaks the message's delimiters; otherwise without the ACK's
    unsafe = _SAFE if enc is own else re.compile(f"[^\\x20-\\x7e]|[{re.escape(enc.field + enc.msh2)}]")

    def get(n: int, comp: int | None = 1) -> str:
        raw = parts[n - 1] if n - 1 < len(parts) else ""
        if comp is not None:
            # MSH-9 may come without its trigger (``ADT``), or without the component separator at all
            comps = raw.split((own or enc).component)
            raw = comps[comp - 1] if comp <= len(comps) else ""
        return unsafe.sub("", raw)[:64]

    return AckHeader(
        sending_application=get(3, None), sending_facility=get(4, None), receiving_application=get(5, None),
        receiving_facility=get(6, None), trigger=get(9, 2), control_id=get(10, None),
        processing_id=get(11) or "P", version=get(12) or "2.5.1", encoding=enc,
    )


def _ack_encoding(enc: Encoding) -> Encoding:
    """The delimiters an ACK uses for a message with ``enc``: the message's own, when they are a full set of
    distinct characters. A short MSH-2 (``~\\&``, no subcomponent) leaves the parser defaults that may clash
    with the given ones; the ACK then uses the standard ``^~\\&`` with the message's field separator, or
    ``|^~\\&`` where even that clashes."""
    chars = enc.field + enc.component + enc.repetition + enc.escape + enc.subcomponent
    if len(enc.escape) == 1 and len(set(chars)) == 5:
        return enc
    return Encoding(enc.field) if enc.field not in DEFAULT_ENCODING.msh2 else DEFAULT_ENCODING


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return (2, 5, 1)


def build_ack(header: AckHeader | None, code: AckCode, *, reason: str | None = None,
              error: InputError | None = None, error_kind: str | None = None,
              application: str = "BRIDGE", facility: str = "", when: datetime | None = None,
              control_id: str | None = None) -> str:
    """An original-mode ACK (HL7 v2.5.1 chapter 2.9.2) for ``header``; text with ``\\r`` terminators.

    ``code`` is MSA-1 (AA accepted, AE error, AR rejected); MSA-2 echoes the
    sender's MSH-10. ``reason`` (or ``error``'s reason and position) goes into
    the ERR segment; ``error_kind`` picks the table 0357 code (``parse``,
    ``master_data``, ``message_type``, ``internal``...).
    """
    h = header or AckHeader()
    enc = h.encoding
    esc = enc.escape_text
    fs, cs = enc.field, enc.component
    version = h.version if _version_tuple(h.version) >= (2, 3) else "2.5.1"
    vt = _version_tuple(version)
    trigger = h.trigger or ""
    # ACK's MSH-9.3 (message structure) exists from v2.3.1 on
    msg_type = f"ACK{cs}{esc(trigger)}{cs}ACK" if vt >= (2, 3, 1) else (
        f"ACK{cs}{esc(trigger)}" if trigger else "ACK")
    msh = fs.join([
        "MSH", enc.msh2[:4], esc(application), esc(facility), h.sending_application, h.sending_facility,
        _ts(when), "", msg_type, control_id or _new_control_id(), esc(h.processing_id) or "P", esc(version),
    ])
    text = reason or (error.reason if error is not None else None)
    msa_fields = ["MSA", code, esc(h.control_id)]
    if text and vt < (2, 7):
        # MSA-3 (text message) is kept for receivers older than v2.5; it was withdrawn in v2.7
        msa_fields.append(esc(text[:80]))
    segments = [msh, fs.join(msa_fields)]
    if code != "AA" and (text or error is not None):
        kind = error_kind or "internal"
        if error_kind is None and error is not None:
            kind = "message_type" if getattr(error, "kind", None) == "message_type" else error.category
        err_code, err_text = ERROR_CODES.get(kind, ERROR_CODES["internal"] if code == "AE" else ERROR_CODES["parse"])
        pos = error.position if error is not None else Position()
        location = _location(pos, enc)
        if vt >= (2, 5):
            segments.append(fs.join(["ERR", "", location, cs.join([err_code, err_text, "HL70357"]), "E",
                                     "", "", "", esc((text or err_text)[:250])]))
        else:
            sub = enc.subcomponent
            eld = cs.join([*(location.split(cs) + ["", "", ""])[:3], sub.join([err_code, esc((text or err_text)[:80]),
                                                                              "HL70357"])])
            segments.append(fs.join(["ERR", eld]))
    return "\r".join(segments) + "\r"


def _location(pos: Position, enc: Encoding) -> str:
    """ERR-2 (ERL): segment id ^ sequence ^ field position, from a Position (empty when unknown)."""
    if not pos.segment:
        return ""
    field = ""
    if pos.field and "-" in pos.field:
        num = pos.field.split("-", 1)[1].split(".", 1)[0]
        field = num if num.isdigit() else ""
    parts = [pos.segment, str(pos.segment_index or 1), field]
    return enc.component.join(parts).rstrip(enc.component)


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:f}"


def build_dft_p03(charge: Charge, *, sending_application: str = "BRIDGE", sending_facility: str = "",
                  receiving_application: str = "", receiving_facility: str = "", version: str = "2.5.1",
                  control_id: str | None = None, when: datetime | None = None) -> str:
    """A DFT^P03 (HL7 v2.5.1 chapter 6.4.3) carrying one Charge as its FT1.

    Segment order MSH, EVN, PID, PV1, FT1 (the DFT_P03 structure). PID-5
    (patient name, required) is sent as the HL7 null ``""``: bridge keeps no
    names. A credit (negative amount) goes out as type CD with positive
    amounts, as billing systems expect.
    """
    enc = DEFAULT_ENCODING
    esc = enc.escape_text
    now = _ts(when)
    ctl = control_id or _new_control_id()
    msh = "|".join(["MSH", "^~\\&", esc(sending_application), esc(sending_facility), esc(receiving_application),
                    esc(receiving_facility), now, "", "DFT^P03^DFT_P03", ctl, "P", version])
    evn = "|".join(["EVN", "P03", now])
    pid = "|".join(["PID", "1", "", f"{esc(charge.mrn)}^^^^MR" if charge.mrn else "", "", '""', "", "", "", "", "",
                    "", "", "", "", "", "", "", esc(charge.account_number or "")]).rstrip("|")
    pv1 = ["PV1", "1", "U"] + [""] * 16 + [esc(charge.visit_number or "")]
    credit = charge.amount is not None and charge.amount < 0 or charge.quantity < 0
    ttype = charge.transaction_type
    if credit and ttype == "CG":
        ttype = "CD"
    amount = abs(charge.amount) if charge.amount is not None else None
    tdate = _ts(charge.transaction_date) if charge.transaction_date else now
    posting = ""
    if isinstance(charge.posting_date, datetime):
        posting = _ts(charge.posting_date)
    elif charge.posting_date is not None:
        posting = charge.posting_date.strftime("%Y%m%d")
    ft1 = ["FT1", "1", esc(charge.transaction_id), "", tdate, posting, esc(ttype),
           f"{esc(charge.charge_code)}^{esc(charge.charge_description or '')}".rstrip("^"), "", "",
           f"{abs(charge.quantity):f}", f"{_money(amount)}" if amount is not None else "",
           _money(charge.unit_amount), esc(charge.department or ""), "", "", "", "", "", "",
           esc(charge.performing_provider or ""), esc(charge.ordering_provider or ""), "", "", "", "", "", "", "",
           esc(charge.source_item or "")]
    segments = [msh, evn, pid, "|".join(pv1).rstrip("|"), "|".join(ft1).rstrip("|")]
    return "\r".join(segments) + "\r"
