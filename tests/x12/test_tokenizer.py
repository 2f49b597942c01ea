"""The tokenizer: delimiters from each ISA, line breaks, chunk boundaries, several interchanges."""

from __future__ import annotations

import io
import random

import pytest

from bridge.errors import ParseError
from parsers.x12 import Tokenizer, X12Parser
from parsers.x12.parser import _check_rules
from parsers.x12.sets import RULES, segment_checks
from parsers.x12.tokenizer import IsaError, read_isa
from tests.x12 import synth
from tests.x12.conftest import parse, sample


def test_delimiters_come_from_the_isa() -> None:
    els, d, length = read_isa(synth.isa(7, e="|", c="}", r="!", t="\x1c"))
    assert (d.element, d.component, d.repetition, d.segment) == ("|", "}", "!", "\x1c")
    assert length == 106 and els[13] == "000000007"


def test_4010_has_no_repetition_separator() -> None:
    _, d, _ = read_isa(sample("855.x12").decode())
    assert d.repetition is None and d.component == ">"


def test_segments_with_and_without_line_breaks_and_tiny_chunks_agree() -> None:
    text = sample("837p.x12")
    flat = text.replace(b"\n", b"")
    crlf = text.replace(b"\n", b"\r\n")
    want = list(Tokenizer(io.BytesIO(flat)))
    assert want[0][0] == "ISA" and want[-1][0] == "IEA"
    for data in (text, crlf):
        for chunk in (4096, 1 << 20):
            assert list(Tokenizer(io.BytesIO(data), chunk_size=chunk)) == want
    assert list(Tokenizer(io.BytesIO(crlf), chunk_size=7)) == want


def test_a_value_ending_in_iea_does_not_end_the_interchange() -> None:
    text = sample("837p.x12").replace(b"NM1*IL*1*TESTPATIENT", b"NM1*IL*1*MCGIEA")
    assert b"MCGIEA*" in text
    for data in (text, text.replace(b"\n", b"")):
        for chunk in (4096, 64):
            segs = list(Tokenizer(io.BytesIO(data), chunk_size=chunk))
            assert [s[0] for s in segs].count("IEA") == 1 and segs[-1][0] == "IEA"
            assert ["NM1", "IL", "1", "MCGIEA"] in [s[:4] for s in segs]


def test_several_interchanges_with_different_delimiters() -> None:
    first = sample("850.x12")
    second = sample("855.x12").replace(b"*", b"|").replace(b"~", b"'")  # 4010, other delimiters
    msgs = parse(first + b"\r\n" + second)
    sets = [m for m in msgs if m.type != "interchange"]
    assert [m.type for m in sets] == ["850", "855"]
    assert all(m.error is None for m in msgs)
    assert sets[1].data.segments[1][:4] == ["BAK", "00", "AC", "PO-2026-0042"]


def test_isa_shorter_than_106_is_an_isa_error_with_what_could_be_read() -> None:
    with pytest.raises(IsaError) as info:
        read_isa(sample("bad_isa_short.x12").decode())
    assert "106" in info.value.reason and info.value.note == "022"
    assert info.value.elements is not None and info.value.elements[13] == "000001001"


def test_clashing_delimiters_are_refused() -> None:
    with pytest.raises(IsaError) as info:
        read_isa(sample("bad_delims_clash.x12").decode())
    assert info.value.note == "027" and "same character" in info.value.reason


def test_unreadable_isa_is_a_file_level_error_after_earlier_interchanges() -> None:
    seen: list[str] = []
    with pytest.raises(ParseError) as info:
        for m in X12Parser().parse(io.BytesIO(sample("850.x12") + b"GARBAGE*AFTER*THE*IEA~"), name="g.x12"):
            seen.append(m.type)
    assert seen == ["850", "interchange"]
    assert "interchange 2" in info.value.reason and info.value.position.file == "g.x12"


def test_a_line_break_as_the_segment_terminator() -> None:
    text = sample("850.x12").replace(b"~\n", b"\n")
    _, d, _ = read_isa(text.decode())
    assert d.segment == "\n"
    msgs = parse(text.replace(b"\n", b"\r\n"))
    assert [(m.type, m.error) for m in msgs] == [("850", None), ("interchange", None)]
    assert msgs[0].data.segments[1][:4] == ["BEG", "00", "SA", "PO-2026-0042"]


@pytest.mark.parametrize("sep", ["*", "|", "^", "]"])
def test_the_fast_element_checks_never_pass_a_segment_the_element_rules_reject(sep: str) -> None:
    """The parser trusts ``segment_checks``' pattern to skip the element-by-element rules:
    whatever it matches, the rules must accept (values that look numeric and are not, too)."""
    values = ["", "1", "25", "1.5", "-2", ".5", "1.", "-", ".", "-.", "A", "1.2.3", "12a", "\u0661", "\u00b2", " 1"]
    rng = random.Random(6)
    checks = segment_checks(sep)
    for tag, rules in RULES.items():
        fast = checks[tag][1]
        assert fast is not None
        width = max(rules) + 2
        matched = 0
        for _ in range(3000):
            els = [tag] + [rng.choice(values) for _ in range(rng.randint(0, width))]
            if fast.match(sep.join(els)) is not None:
                matched += 1
                assert _check_rules(els, rules) == [], (tag, els)
        # and a segment with every element a plain number passes it
        assert fast.match(sep.join([tag] + ["10"] * width)) is not None
        assert matched > 0
