"""ACKs and outbound DFT^P03, refereed by hl7apy's strict validation."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from bridge.errors import MasterDataError, ParseError, Position
from mappings.canonical import Charge
from parsers.hl7 import parse_message
from parsers.hl7_write import build_ack, build_dft_p03, header_from_bytes
from tests.hl7.messages import SAMPLES, dft_p03
from tests.hl7.test_fuzz import mutate


def strict(text: str) -> None:
    msg = hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT)
    msg.validate()


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_ack_is_valid_and_echoes_msh10(version: str, code: str) -> None:
    header = header_from_bytes(dft_p03("CTL-42", version=version))
    err = MasterDataError("no department crosswalk entry for code 'NOWHERE'",
                          Position(segment="FT1", segment_index=2, field="FT1-13"), kind="department", key="NOWHERE")
    text = build_ack(header, code, error=None if code == "AA" else err)
    strict(text)
    ack = parse_message(text)
    assert ack.type == "ACK^P03" and ack.version == version
    assert (ack.value("MSA-1"), ack.value("MSA-2")) == (code, "CTL-42")
    assert ack.msh.value(5) == "BILLSYS" and ack.msh.value(6) == "GENHOSP"
    if code == "AA":
        assert "ERR" not in ack
    elif version >= "2.5":
        err_seg = ack["ERR"]
        assert (err_seg.value(2, 1), err_seg.value(2, 2), err_seg.value(2, 3)) == ("FT1", "2", "13")
        assert err_seg.value(3, 1) == "103" and err_seg.value(4) == "E"
        assert err_seg.value(8) == "no department crosswalk entry for code 'NOWHERE'"
    else:
        assert ack["ERR"].value(1, 4, 1) == "103"


def test_ack_escapes_the_senders_delimiters_in_the_reason() -> None:
    header = header_from_bytes((SAMPLES / "dft_p03_cr.hl7").read_bytes())
    text = build_ack(header, "AE", reason="bad | field ^ with & and ~ and \\")
    strict(text)
    assert parse_message(text).value("ERR-8") == "bad | field ^ with & and ~ and \\"


def test_ack_for_unreadable_bytes() -> None:
    assert header_from_bytes(b"PID|1||X\r") is None
    text = build_ack(None, "AR", error=ParseError("message does not begin with MSH"))
    # nothing readable to echo: MSA-2 stays empty, the rest is the ACK structure
    hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT)
    ack = parse_message(text)
    assert (ack.value("MSA-1"), ack.value("MSA-2"), ack.value("ERR-3")) == ("AR", "", "102")


@pytest.mark.parametrize(("msh", "trigger", "control", "delimiters"), [
    # MSH-9 without its trigger event
    (b"MSH|^~\\&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126||DFT|NOTRIG1|P|2.5.1", "", "NOTRIG1", "|^~\\&"),
    # MSH-2 without the component separator: MSH-9 has none either
    (b"MSH|~\\&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126||DFTP03|NOCOMP1|P|2.5.1", "", "NOCOMP1", "|^~\\&"),
    # MSH-2 of three characters: the subcomponent the parser defaults to ('&') would be the escape
    (b"MSH|^~&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126||DFT^P03|SHORT1|P|2.5.1", "P03", "SHORT1", "|^~\\&"),
    # '#' separates fields and MSH-2 is not valid: the ACK keeps '#' with the standard MSH-2 ('|' is no delimiter)
    (b"MSH#^^~\\&#BILL|SYS#GENHOSP#BRIDGE#ERP#20261126##DFT^^P03#PIPE1#P#2.5.1", "", "PIPE1", "#^~\\&"),
    # '^' separates fields and '|' components: unusual, valid, and kept
    (b"MSH^|~\\&^BILLSYS^GENHOSP^BRIDGE^ERP^20261126^^DFT|P03^CARET1^P^2.5.1", "P03", "CARET1", "^|~\\&"),
    # '^' separates fields and MSH-2 is not valid: the standard characters would clash, so all of '|^~\\&'
    (b"MSH^A~\\&^BILLSYS^GENHOSP^BRIDGE^ERP^20261126^^DFT^CARET2^P^2.5.1", "", "CARET2", "|^~\\&"),
    # a sender's own valid delimiters are kept
    (b"MSH#^~\\&#BILLSYS#GENHOSP#BRIDGE#ERP#20261126##DFT^P03#HASH1#P#2.5.1", "P03", "HASH1", "#^~\\&"),
])
def test_ack_for_an_odd_msh_is_readable_and_echoes_msh10(msh: bytes, trigger: str, control: str,
                                                         delimiters: str) -> None:
    """Shapes an engine really sends (and that once raised IndexError while the ACK's header was read,
    which left the MLLP senders of that group without any answer)."""
    header = header_from_bytes(msh + b"\rPID|1||X\r")
    assert header is not None and (header.trigger, header.control_id) == (trigger, control)
    for code in ("AA", "AE", "AR"):
        text = build_ack(header, code, reason="bad | field ^ with & and ~ and \\")
        assert text[3:8] == delimiters
        ack = parse_message(text)
        assert (ack.value("MSA-1"), ack.value("MSA-2")) == (code, control)
        assert ack.msh.value(5) == ("BILL|SYS" if control == "PIPE1" else "BILLSYS")


def test_an_msh_that_ends_after_its_name_gets_an_ack_with_an_empty_msa2() -> None:
    assert header_from_bytes(b"MSH\r|^~\\&|BILLSYS|GENHOSP\r") is None


def test_acks_for_mutated_messages_always_parse() -> None:
    """2,000 mutated sample messages (the fuzz of tests/hl7/test_fuzz.py): reading the ACK's header never
    raises, and every ACK reads back with MSA-2 echoing what was read of MSH-10."""
    samples = [p.read_bytes() for p in sorted(SAMPLES.glob("*.hl7"))]
    rng = random.Random(11)
    for _ in range(2000):
        data = mutate(rng, rng.choice(samples))
        header = header_from_bytes(data)
        text = build_ack(header, "AR", error=ParseError("x|y^z~w\\&", Position(segment="PID", field="PID-5")),
                         error_kind="parse")
        ack = parse_message(text)
        assert ack.value("MSA-2") == (header.control_id if header is not None else ""), (data[:120], text)


def test_outbound_dft_p03_from_a_charge_is_strictly_valid_and_reads_back() -> None:
    charge = Charge(transaction_id="TX-9", sender="BILLSYS@GENHOSP", transaction_type="CG",
                    transaction_date=datetime(2026, 11, 26, 8, 0, tzinfo=UTC), posting_date=date(2026, 11, 26),
                    charge_code="SUP100", charge_description="Suture kit & needle", quantity=Decimal(-2),
                    amount=Decimal("-30.00"), unit_amount=Decimal("15.00"), department="4WEST",
                    cost_center="CC-4100", performing_provider="P200", visit_number="VN1", mrn="MRN1",
                    account_number="ACCT1", source_item="SUP100", source_channel="api")
    text = build_dft_p03(charge, receiving_application="BILLSYS", receiving_facility="GENHOSP")
    strict(text)
    msg = parse_message(text)
    ft1 = msg["FT1"]
    assert msg.type == "DFT^P03" and msg.structure == "DFT_P03"
    assert (ft1.value(2), ft1.value(6), ft1.value(7, 2), ft1.value(10), ft1.value(11)) == (
        "TX-9", "CD", "Suture kit & needle", "2", "30.00")
    assert (ft1.value(13), ft1.value(29), msg.value("PV1-19"), msg.value("PID-3"), msg.value("PID-18")) == (
        "4WEST", "SUP100", "VN1", "MRN1", "ACCT1")
