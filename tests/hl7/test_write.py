"""ACKs and outbound DFT^P03, refereed by hl7apy's strict validation."""

from __future__ import annotations

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
