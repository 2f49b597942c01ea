"""Synthetic X12 interchanges for tests and the benchmark (no real patients, payers or vendors).

Shapes follow the X12 5010 implementation guides' loop structure (837P
005010X222A1, 837I 005010X223A2, 835 005010X221A1) and common supply-chain
conventions for 850/855/856/810/832 (4010/5010). Names, ids and amounts are
made up; NPIs use the test prefix 1999999999 family.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["claim_837", "interchange", "isa", "remit_835", "write_837", "write_835"]


def isa(control: int, *, sender: str = "CLEARHOUSE01", receiver: str = "BRIDGEHOSP", version: str = "00501",
        ack: str = "0", e: str = "*", c: str = ":", r: str = "^", t: str = "~") -> str:
    rep = r if version >= "00501" else "U"
    return e.join(["ISA", "00", " " * 10, "00", " " * 10, "ZZ", sender.ljust(15), "ZZ", receiver.ljust(15),
                   "261126", "1200", rep, version, f"{control:09d}", ack, "P", c]) + t


def interchange(control: int, groups: list[tuple[str, str, int, list[list[str]]]], *, sender: str = "CLEARHOUSE01",
                receiver: str = "BRIDGEHOSP", version: str = "00501", ack: str = "0", nl: str = "\n",
                iea_count: int | None = None, iea_control: int | None = None) -> str:
    """groups: (GS01, GS08, GS06, [set segments text, each a list of 'SEG*..' strings incl. ST/SE])."""
    out = [isa(control, sender=sender, receiver=receiver, version=version, ack=ack) + nl]
    for fid, gver, gctl, sets in groups:
        out.append(f"GS*{fid}*{sender}*{receiver}*20261126*1200*{gctl}*X*{gver}~{nl}")
        for segs in sets:
            out.extend(s + "~" + nl for s in segs)
        out.append(f"GE*{len(sets)}*{gctl}~{nl}")
    n = len(groups) if iea_count is None else iea_count
    out.append(f"IEA*{n}*{(control if iea_control is None else iea_control):09d}~{nl}")
    return "".join(out)


def st_se(set_id: str, control: str, body: list[str], impl: str | None = None, *, se_count: int | None = None) -> list[str]:
    st = f"ST*{set_id}*{control}" + (f"*{impl}" if impl else "")
    n = len(body) + 2 if se_count is None else se_count
    return [st, *body, f"SE*{n}*{control}"]


def claim_837(n: int, *, institutional: bool = False, lines: int = 2, hl: int = 2) -> list[str]:
    """The 2000B/2300/2400 loops of one synthetic claim (subscriber is the patient)."""
    out = [
        f"HL*{hl}*1*22*0",
        "SBR*P*18*GRP01******CI",
        f"NM1*IL*1*TESTPATIENT*ALEX****MI*MBR{n:08d}",
        "N3*1 TEST STREET",
        "N4*SPRINGFIELD*IL*627010000",
        "DMG*D8*19800101*F",
        "NM1*PR*2*TEST PAYER*****PI*99999",
    ]
    total = sum(100 + i * 25 for i in range(lines))
    if institutional:
        out += [f"CLM*PCN{n:08d}*{total}.00***11:A:1**A*Y*Y", "DTP*434*RD8*20261101-20261103",
                "CL1*1*7*01", "HI*ABK:R69"]
    else:
        out += [f"CLM*PCN{n:08d}*{total}.00***11:B:1*Y*A*Y*Y", "HI*ABK:R69"]
    for i in range(lines):
        amount = 100 + i * 25
        out.append(f"LX*{i + 1}")
        if institutional:
            out.append(f"SV2*0450*HC:99283*{amount}.00*UN*1")
        else:
            out.append(f"SV1*HC:9921{3 + i}:25*{amount}.00*UN*1***1")
        out.append("DTP*472*D8*20261101")
    return out


def set_837(control: str, claims: range, *, institutional: bool = False) -> list[str]:
    impl = "005010X223A2" if institutional else "005010X222A1"
    body = [
        f"BHT*0019*00*BATCH{control}*20261126*1200*CH",
        "NM1*41*2*TEST BILLING SERVICE*****46*TBS0001",
        "PER*IC*BILLING DESK*TE*5555550100",
        "NM1*40*2*BRIDGE PAYER GATEWAY*****46*BPG0001",
        "HL*1**20*1",
        "NM1*85*2*TEST CLINIC*****XX*1999999984",
        "N3*100 MAIN ST",
        "N4*SPRINGFIELD*IL*627010000",
        "REF*EI*990000001",
    ]
    for i, n in enumerate(claims):
        body += claim_837(n, institutional=institutional, hl=2 + i)
    return st_se("837", control, body, impl)


def remit_835(n: int, *, services: int = 2) -> list[str]:
    charge = sum(100 + i * 25 for i in range(services))
    paid = charge - 20 * services
    out = [f"CLP*PCN{n:08d}*1*{charge}.00*{paid}.00*{10 * services}.00*12*PAYERCLM{n:08d}*11*1",
           f"NM1*QC*1*TESTPATIENT*ALEX****MI*MBR{n:08d}",
           "DTM*232*20261101"]
    for i in range(services):
        amount = 100 + i * 25
        out += [f"SVC*HC:9921{3 + i}*{amount}.00*{amount - 20}.00**1", "DTM*472*20261101",
                "CAS*CO*45*10.00", "CAS*PR*2*10.00"]
    return out


def set_835(control: str, claims: range, *, trace: str | None = None) -> list[str]:
    services = 2
    total = sum(sum(100 + i * 25 for i in range(services)) - 20 * services for _ in claims)
    body = [
        f"BPR*I*{total}.00*C*ACH*CCP*01*999999992*DA*123456*1512345678**01*999988880*DA*98765*20261126",
        f"TRN*1*{trace or 'EFT' + control}*1512345678",
        "DTM*405*20261126",
        "N1*PR*TEST PAYER",
        "N3*1 PAYER WAY",
        "N4*CAPITAL CITY*IL*627010000",
        "PER*BL*TECH SUPPORT*TE*5555550199",
        "N1*PE*TEST CLINIC*XX*1999999984",
        "LX*1",
    ]
    for n in claims:
        body += remit_835(n)
    return st_se("835", control, body)


def write_837(out: BinaryIO, claims: int, *, per_set: int = 5000, start_control: int = 1) -> int:
    """Stream an 837P interchange with ``claims`` claims, ``per_set`` per ST (the IG's cap). Returns bytes."""
    return _write(out, "HC", "005010X222A1", claims, per_set, lambda ctl, r: set_837(ctl, r), start_control)


def write_835(out: BinaryIO, claims: int, *, per_set: int = 5000, start_control: int = 1) -> int:
    return _write(out, "HP", "005010X221A1", claims, per_set, lambda ctl, r: set_835(ctl, r), start_control)


def _write(out: BinaryIO, fid: str, gver: str, claims: int, per_set: int, make, control: int) -> int:  # noqa: ANN001
    size = 0

    def w(text: str) -> None:
        nonlocal size
        data = text.encode()
        size += len(data)
        out.write(data)

    w(isa(control) + "\n")
    w(f"GS*{fid}*CLEARHOUSE01*BRIDGEHOSP*20261126*1200*{control}*X*{gver}~\n")
    sets = 0
    for first in range(0, claims, per_set):
        sets += 1
        segs = make(f"{sets:04d}", range(first, min(claims, first + per_set)))
        w("~\n".join(segs) + "~\n")
    w(f"GE*{sets}*{control}~\n")
    w(f"IEA*1*{control:09d}~\n")
    return size


def iter_sets(claims: int, per_set: int) -> Iterator[range]:
    for first in range(0, claims, per_set):
        yield range(first, min(claims, first + per_set))
