"""Synthetic HL7 v2 messages for tests and the benchmark (no real patients: made-up ids and names).

Shapes follow HL7 v2.5.1 chapter 6 (DFT^P03: MSH, EVN, PID, PV1, FT1...).
"""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hl7"

DEPARTMENTS = {"4WEST": "CC-4100", "OR": "CC-5100"}
ITEMS = {"IMP777": "ERP-IMP-777", "SUP100": "ERP-SUP-100"}


def dft_p03(control_id: str, *, ft1: int = 3, sender: str = "BILLSYS", visit: str = "VN90001",
            txn_prefix: str | None = None, department: str = "4WEST", version: str = "2.5.1",
            terminator: str = "\r") -> bytes:
    """One DFT^P03 with ``ft1`` FT1 segments (charges, every third a credit), transaction ids unique per control id."""
    prefix = txn_prefix or control_id
    segs = [
        f"MSH|^~\\&|{sender}|GENHOSP|BRIDGE|ERP|20261126083000||DFT^P03^DFT_P03|{control_id}|P|{version}",
        "EVN|P03|20261126083000",
        "PID|1||MRN10001^^^GENHOSP^MR||TESTPATIENT^ALPHA||19700101|F",
        f"PV1|1|I|4WEST^401^A||||D100^DOCTOR^ONE|||SUR||||||||I|{visit}",
    ]
    for i in range(1, ft1 + 1):
        ttype = "CD" if i % 3 == 0 else "CG"
        segs.append(f"FT1|{i}|{prefix}-{i}||20261126080000|20261126083000|{ttype}|SUP100^Suture kit|||{i}|"
                    f"{15 * i}.00|15.00|{department}|||||||P200|D100||||||||SUP100")
    return (terminator.join(segs) + terminator).encode()


def batch(messages: list[bytes]) -> bytes:
    """An FHS/BHS batch file (HL7 v2.5.1 chapter 2.10.3) around ``messages``."""
    head = b"FHS|^~\\&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126090000\rBHS|^~\\&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126090000\r"
    tail = f"BTS|{len(messages)}\rFTS|1\r".encode()
    return head + b"".join(messages) + tail
