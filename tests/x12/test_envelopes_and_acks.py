"""Bad envelopes and sets: the errors operators see, and the TA1/999/997 the sender gets.

Every 999 and 997 for a HIPAA group is refereed by pyx12's ``x12valid``.
(pyx12's 999/997 maps only admit HIPAA functional groups in AK101, and it
cannot read a TA1-only interchange, so those are checked by structure here.)
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from parsers.x12 import X12Parser
from parsers.x12.acks import AckDocument, build_acks
from parsers.x12.model import InterchangeReport
from tests.x12 import synth
from tests.x12.conftest import parse, sample

X12VALID = Path(sys.executable).parent / "x12valid"


def acks_for(data: bytes, **kw: object) -> tuple[list, list[AckDocument]]:
    msgs = parse(data)
    counter = iter(range(1, 1000))
    docs: list[AckDocument] = []
    for m in msgs:
        if isinstance(m.data, InterchangeReport):
            docs += build_acks(m.data, next_control=lambda _k: next(counter), now=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
                               **kw)  # type: ignore[arg-type]
    return msgs, docs


def segments(doc: AckDocument, *ids: str) -> list[str]:
    return [s for s in doc.content.split("~") if s.split("*")[0] in ids]


def x12valid(tmp_path: Path, doc: AckDocument) -> None:
    path = tmp_path / f"{doc.kind}_{doc.control}.x12"
    path.write_text(doc.content)
    res = subprocess.run([str(X12VALID), str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    # x12valid's exit status is always 1 (it exits with main()'s True); its verdict is the last line
    assert f"{path}: OK" in res.stderr, res.stderr[-2000:]


def test_good_837_gets_a_999_accept_and_a_ta1_when_isa14_asks(tmp_path: Path) -> None:
    msgs, docs = acks_for(sample("837p.x12"))
    assert [m.error for m in msgs] == [None, None]
    ta1, ack = docs
    assert ta1.kind == "TA1" and segments(ta1, "TA1") == ["TA1*000001001*261126*1200*A*000"]
    assert ack.kind == "999" and segments(ack, "IK5", "AK9") == ["IK5*A", "AK9*A*1*1*1"]
    # the ack goes back: sender and receiver swapped
    isa = ack.content[:106].split("*")
    assert (isa[6].strip(), isa[8].strip(), isa[14]) == ("BRIDGEHOSP", "CLEARHOUSE01", "0")
    x12valid(tmp_path, ack)


@pytest.mark.parametrize(("name", "field", "ik"), [
    ("bad_se_count.x12", "SE01", ["IK5*R*4"]),
    ("bad_se_control.x12", "SE02", ["IK5*R*3"]),
    ("bad_missing_bht.x12", None, ["IK3*BHT*40**3", "IK5*R*5"]),
    ("bad_data_separator.x12", "NM113", ["IK3*NM1*7**8", "IK4*13**3", "IK5*R*5"]),
    ("bad_clm02.x12", "CLM02", ["IK3*CLM*18**8", "IK4*2**6", "IK5*R*5"]),
])
def test_set_errors_point_at_segment_and_element_and_reject_in_the_999(tmp_path: Path, name: str,
                                                                       field: str | None, ik: list[str]) -> None:
    msgs, docs = acks_for(sample(name), ta1="never")
    (bad, _report) = msgs
    assert bad.error is not None and bad.data is None and bad.error.position.field == field
    assert bad.error.position.control == "000001001/1001/0001"
    assert "PCN" not in bad.error.reason and "TESTPATIENT" not in bad.error.reason  # no PHI in reasons
    (ack,) = docs
    assert segments(ack, "IK3", "IK4", "IK5") == ik
    assert segments(ack, "AK9") == ["AK9*R*1*1*0"]
    x12valid(tmp_path, ack)


@pytest.mark.parametrize(("name", "note", "field"), [
    ("bad_isa_short.x12", "022", None),
    ("bad_delims_clash.x12", "027", None),
    ("bad_iea_count.x12", "021", "IEA01"),
    ("bad_iea_control.x12", "001", "IEA02"),
])
def test_interchange_rejections_get_a_ta1_and_process_no_set(name: str, note: str, field: str | None) -> None:
    msgs, docs = acks_for(sample(name))
    assert [m.type for m in msgs] == ["interchange", "interchange"]
    rejected, report = msgs
    assert rejected.error is not None and "rejected" in rejected.error.reason
    assert rejected.error.position.field == field and rejected.error.position.control == "000001001"
    assert report.error is None and report.data.status == "R"
    (ta1,) = docs  # no 999 for an interchange that was not opened
    assert segments(ta1, "TA1") == [f"TA1*000001001*261126*1200*R*{note}"]
    # the TA1 is written with sane delimiters even when the sender's clash
    assert ta1.content[3] == "*" and ta1.content[104] == ":" and ta1.content[105] == "~"


def test_ge_mismatch_rejects_every_set_of_the_group(tmp_path: Path) -> None:
    msgs, docs = acks_for(sample("bad_ge_control.x12"), ta1="never")
    assert msgs[0].error is not None and "GE02" in msgs[0].error.reason
    (ack,) = docs
    assert segments(ack, "AK9") == ["AK9*R*1*1*0*4"]
    x12valid(tmp_path, ack)


def test_unknown_transaction_set_is_reported_and_rejected() -> None:
    msgs, docs = acks_for(sample("bad_unknown_set.x12"))
    assert msgs[0].type == "123" and msgs[0].error is not None
    assert "123 is not supported" in msgs[0].error.reason and msgs[0].error.position.field == "ST01"
    (ack,) = docs
    assert segments(ack, "AK2", "IK5", "AK9") == ["AK2*123*0001*005010", "IK5*R*1", "AK9*R*1*1*0"]


def test_missing_se_and_missing_iea() -> None:
    text = sample("850.x12").decode()
    cut = text[: text.index("SE*")]  # the set, group and interchange never end
    msgs, docs = acks_for(cut.encode())
    assert msgs[0].error is not None and msgs[0].type == "interchange"
    assert "without an IEA" in msgs[0].error.reason
    assert segments(docs[0], "TA1")[0].endswith("*R*023")


def test_4010_group_gets_a_997_refereed_by_x12valid(tmp_path: Path) -> None:
    body = ["BHT*0019*00*B1*20261126*1200*CH", "HL*1**20*1", "HL*2*1*22*0",
            "CLM*P1*10***11:B:1*Y*A*Y*Y", "LX*1", "SV1*HC:99213*10*UN*1***1", "SE*99*0001"]
    text = synth.interchange(77, [("HC", "004010X098A1", 77, [["ST*837*0001", *body]])], version="00401")
    msgs, docs = acks_for(text.encode(), ta1="never")
    (ack,) = docs
    assert ack.kind == "997" and ack.content[84:89] == "00401"
    assert segments(ack, "AK1", "AK2", "AK5", "AK9") == ["AK1*HC*77", "AK2*837*0001", "AK5*R*4", "AK9*R*1*1*0"]
    x12valid(tmp_path, ack)


def test_acks_are_never_acknowledged() -> None:
    _, docs = acks_for(sample("837p.x12"), ta1="never")
    msgs, again = acks_for(docs[0].content.encode(), ta1="never")
    assert msgs[0].type == "999" and msgs[0].error is None
    assert again == []


def test_hipaa_validation_with_pyx12_flags_what_the_guide_requires() -> None:
    # the 837P sample is guide-clean; dropping the submitter's PER breaks 1000A
    good = [m for m in parse(sample("837p.x12"), validate="hipaa") if m.type == "837"]
    assert good[0].error is None
    broken = sample("837p.x12").decode().replace("PER*IC*BILLING DESK*TE*5555550100~\n", "")
    seg_count = broken.split("SE*")[1].split("*")[0]
    broken = broken.replace(f"SE*{seg_count}*", f"SE*{int(seg_count) - 1}*")
    (bad,) = [m for m in parse(broken.encode(), validate="hipaa") if m.type == "837"]
    assert bad.error is not None and bad.error.position.segment == "PER"


def test_non_seekable_streams_are_spooled() -> None:
    import io

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # noqa: ANN001
            chunk = self.inner.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    msgs = list(X12Parser().parse(Pipe(sample("bad_iea_count.x12")), name="p.x12"))  # type: ignore[arg-type]
    assert msgs[0].error is not None and "IEA01" in msgs[0].error.reason


def test_each_interchange_of_a_file_is_judged_on_its_own() -> None:
    msgs, docs = acks_for(sample("bad_iea_count.x12") + sample("850.x12") + sample("855.x12"), ta1="on_error")
    assert [(m.type, m.error is None) for m in msgs] == [
        ("interchange", False), ("interchange", True), ("850", True), ("interchange", True), ("855", True),
        ("interchange", True)]
    assert [m.index for m in msgs] == list(range(6))
    assert [(d.kind, d.status) for d in docs] == [("TA1", "R"), ("999", "A"), ("997", "A")]
