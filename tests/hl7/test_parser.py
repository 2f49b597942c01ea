"""HL7 v2 tokenizer: terminators, batches, encoding characters, escapes, Z-segments and bad input."""

from __future__ import annotations

import io

import pytest

from bridge.errors import ParseError
from parsers.hl7 import HL7Parser, HL7ParserConfig, Message, parse_message
from tests.hl7.messages import SAMPLES, batch, dft_p03


def parse(data: bytes, name: str = "in.hl7", **config: object) -> list:
    return list(HL7Parser(HL7ParserConfig.model_validate(config)).parse(io.BytesIO(data), name=name))


@pytest.mark.parametrize("sample", ["dft_p03_cr.hl7", "dft_p03_lf.hl7", "dft_p03_crlf.hl7"])
def test_each_terminator_gives_the_same_message(sample: str) -> None:
    [env] = parse((SAMPLES / sample).read_bytes(), sample)
    assert env.error is None
    assert (env.type, env.control_id, env.sender) == ("DFT^P03", "DFT00001", "BILLSYS@GENHOSP")
    msg: Message = env.data
    assert [s.id for s in msg] == ["MSH", "EVN", "PID", "PV1", "FT1", "ZFT", "FT1", "FT1"]
    assert msg.version == "2.5.1"
    ft1 = msg.segments("FT1")
    assert [s.value(2) for s in ft1] == ["TX1001", "TX1002", "TX1003"]
    assert str(ft1[1].position(10)) == (f"file {sample!r}, message 0, segment FT1 #2, field FT1-10, "
                                        "control DFT00001")


def test_crlf_split_across_read_chunks() -> None:
    import parsers.hl7 as mod

    data = (SAMPLES / "dft_p03_crlf.hl7").read_bytes() * 3
    old = mod._CHUNK
    mod._CHUNK = 7  # every "\r\n" lands on a chunk boundary somewhere
    try:
        envs = parse(data)
    finally:
        mod._CHUNK = old
    assert [len(e.data) for e in envs] == [8, 8, 8]


def test_escapes_are_decoded_on_access_and_repetitions_addressable() -> None:
    [env] = parse((SAMPLES / "dft_p03_cr.hl7").read_bytes())
    msg: Message = env.data
    ft1 = msg.segment("FT1")
    assert ft1 is not None
    assert ft1.value(7, 2) == "Total knee & implant"           # \T\ -> subcomponent separator
    assert "\\T\\" in ft1.raw_value(7)                           # stored raw until read
    assert msg.value("ZFT-3") == "cabinet|bay 3"                  # \F\ -> field separator
    pid = msg["PID"]
    reps = pid.repetitions(3)
    assert [r.component(5) for r in reps] == ["MR", "SS"]
    assert pid.value(3, 1, repetition=2) == "SSN000"


def test_a_component_reads_the_same_through_the_segment_and_its_repetition() -> None:
    msg = parse_message(b'MSH|^~\\&|A|B|C|D|20261126||DFT^P03|N1|P|2.5.1\rPID|1||M1^""^^H\\T\\S&x^MR~M2\r')
    pid = msg["PID"]
    [first, second] = pid.repetitions(3)
    for number, expected in ((1, "M1"), (2, ""), (3, ""), (4, "H&S"), (5, "MR"), (9, "")):
        assert first.component(number) == pid.value(3, number) == expected  # HL7 null "" reads as ""
    assert first.component(4, 2) == pid.value(3, 4, 2) == "x"
    assert second.component(1) == pid.value(3, 1, repetition=2) == "M2"



def test_values_reads_several_positions_as_value_does() -> None:
    msg = parse_message(b'MSH|^~\\&|A|B|C|D|20261126||DFT^P03|N1|P|2.5.1\r'
                        b'FT1|1|""|a\\T\\b|C1^Desc^x&y|r1~r2|plain\r')
    ft1 = msg["FT1"]
    refs = [(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 1), (4, 2, 1), (4, 3, 2), (5, 1, 1), (6, 1, 1), (40, 1, 1)]
    assert ft1.values(refs) == [ft1.value(n, c, s) for n, c, s in refs]
    assert ft1.values(refs) == ["1", "", "a&b", "C1", "Desc", "y", "r1", "plain", ""]
    assert msg.msh.values([(1, 1, 1), (2, 1, 1), (10, 1, 1)]) == ["|", "^~\\&", "N1"]

@pytest.mark.parametrize(("raw", "expected"), [
    ("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"),
    ("x\\X41C3A9\\y", "xAéy"),
    ("line1\\.br\\line2", "line1\nline2"),
    ("\\H\\bold\\N\\", "bold"),
    ("keep \\Zsite\\ as is", "keep \\Zsite\\ as is"),
    ("unterminated \\F", "unterminated \\F"),
])
def test_escape_sequences(raw: str, expected: str) -> None:
    msg = parse_message(f"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5\rZZZ|{raw}\r")
    assert msg.value("ZZZ-1") == expected


def test_encoding_characters_come_from_msh2() -> None:
    text = "MSH*@!#$*APP*FAC*B*E*20260101**DFT@P03*C1*P*2.5\rFT1*1*T1****CG*CODE@Desc$x!R2\r"
    msg = parse_message(text)
    assert msg.type == "DFT^P03" and msg.control_id == "C1"
    ft1 = msg["FT1"]
    assert ft1.value(7, 2) == "Desc"
    assert ft1.value(7, 2, 2) == "x"
    assert ft1.value(7, 1, repetition=2) == "R2"
    assert msg.msh.value(1) == "*" and msg.msh.value(2) == "@!#$"


def test_batch_with_fhs_bhs_and_z_segments() -> None:
    [*envs] = parse((SAMPLES / "dft_p03_batch.hl7").read_bytes())
    assert [e.control_id for e in envs] == ["DFT00002", "DFT00003", "DFT00004"]
    assert [e.index for e in envs] == [0, 1, 2]
    assert all(e.data.segments("ZFT") for e in envs)


def test_unknown_segments_are_kept() -> None:
    msg = parse_message("MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5\rQQQ|1|x\rPV1|1|I\r")
    assert [s.id for s in msg] == ["MSH", "QQQ", "PV1"] and msg.value("QQQ-2") == "x"


def test_missing_msh_is_a_message_error_and_the_batch_goes_on() -> None:
    data = b"PID|1||X\rPV1|1\r" + dft_p03("C2")
    envs = parse(data, "mixed.hl7")
    assert envs[0].error is not None
    assert "does not begin with MSH" in envs[0].error.reason
    assert envs[0].error.position.segment == "PID" and envs[0].error.position.message == 0
    assert envs[1].error is None and envs[1].control_id == "C2"


def test_wrong_field_separator() -> None:
    [env] = parse((SAMPLES / "bad_field_separator.hl7").read_bytes(), "bad.hl7")
    assert env.error is not None and "field separator" in env.error.reason
    assert env.error.position.field == "MSH-1"


def test_segment_using_another_separator_names_the_segment() -> None:
    data = b"MSH|^~\\&|A|B|C|D|20260101||DFT^P03|C9|P|2.5\rEVN|P03\rFT1!1!T1\r"
    [env] = parse(data)
    assert env.error is not None and "segment 3" in env.error.reason
    assert env.error.position.control == "C9"


def test_truncated_msh_and_truncated_batch() -> None:
    [env] = parse((SAMPLES / "bad_truncated_msh.hl7").read_bytes())
    assert env.error is not None and "truncated" in env.error.reason and env.error.position.field == "MSH-9"
    parser = HL7Parser()
    got = []
    with pytest.raises(ParseError) as info:
        for e in parser.parse(io.BytesIO((SAMPLES / "dft_p03_batch_truncated.hl7").read_bytes()), name="cut.hl7"):
            got.append(e)
    assert len(got) == 2 and all(e.error is None for e in got)
    assert "truncated" in info.value.reason


def test_bts_count_mismatch_is_reported() -> None:
    data = batch([dft_p03("A1"), dft_p03("A2")]).replace(b"BTS|2", b"BTS|3")
    with pytest.raises(ParseError, match="BTS-1 declares 3"):
        parse(data)


def test_empty_file_raises() -> None:
    with pytest.raises(ParseError, match="no HL7 segments"):
        parse(b"\r\n\r\n")


def test_non_utf8_bytes_name_message_segment_and_field() -> None:
    data = dft_p03("G1") + (SAMPLES / "bad_not_utf8.hl7").read_bytes()
    envs = parse(data, "latin.hl7")
    assert envs[0].error is None
    err = envs[1].error
    assert err is not None
    assert (err.position.message, err.position.segment, err.position.segment_index, err.position.field) == (
        1, "PID", 1, "PID-5")
    assert "TESTPATI" not in str(err)  # no PHI in the error


def test_charset_from_msh18_and_from_config() -> None:
    [env] = parse((SAMPLES / "dft_p03_latin1_msh18.hl7").read_bytes())
    assert env.error is None and env.data.value("PID-5") == "TESTPATIÉNT" and env.meta["charset"] == "latin-1"
    [env] = parse((SAMPLES / "bad_not_utf8.hl7").read_bytes(), charset="cp1252")
    assert env.error is None and env.data.value("PID-5") == "TESTPATIÉNT"
    [env] = parse((SAMPLES / "bad_not_utf8.hl7").read_bytes(), decode_errors="replace")
    assert env.error is None and "\ufffd" in env.data.value("PID-5")


def test_unknown_charset_in_msh18() -> None:
    data = dft_p03("U1").replace(b"|P|2.5.1", b"|P|2.5.1||||||KLINGON", 1)
    [env] = parse(data)
    assert env.error is not None and env.error.position.field == "MSH-18"


def test_oversize_message_is_rejected_with_bounded_memory() -> None:
    big = b"MSH|^~\\&|A|B|C|D|20260101||DFT^P03|BIG1|P|2.5\rOBX|1|ED|X||" + b"A" * (50 * 1024 * 1024) + b"\r"
    envs = parse(big + dft_p03("SMALL"), max_message_bytes=1024 * 1024)
    assert envs[0].error is not None and "larger than the limit" in envs[0].error.reason
    assert envs[0].control_id == "BIG1"
    assert envs[1].error is None and envs[1].control_id == "SMALL"


def test_strict_validation_on_request() -> None:
    ok = parse((SAMPLES / "dft_p03_cr.hl7").read_bytes(), validate="strict")
    assert ok[0].error is None
    bad = b"MSH|^~\\&|A|B|C|D|20260101||DFT^P03^DFT_P03|V1|P|2.5\rFT1|1\r"
    [env] = parse(bad, validate="strict")
    assert env.error is not None and "structural validation" in env.error.reason


def test_strict_validation_reports_misplaced_segments_instead_of_dropping_them() -> None:
    data = b"MSH|^~\\&|A|B|C|D|20260101||DFT^P03^DFT_P03|V2|P|2.5\rEVN|P03|20260101\rPID|1||X||Y\rQQQ|1\rFT1|1|||20260101||CG|X\r"
    [env] = parse(data, validate="strict")
    assert env.error is not None and "structural validation" in env.error.reason
