"""X12 interchanges -> one ``Message`` per transaction set, plus one per interchange for its acks.

Owns the envelope rules of X12.5/X12.6 and the set-level checks a 999/997
reports (005010X231A1, 004010 997):

- ISA exactly 106 characters with sane delimiters, else the interchange is
  rejected (TA1 TA104=R with the note code), its sets are not processed;
- IEA01 = number of groups (TA1 note 021), IEA02 = ISA13 (note 001), IEA
  present (note 023): checked in a first, envelope-only pass over the
  (seekable) stream, so a rejected interchange yields no set to commit;
- GE01 = number of sets (AK905 5), GE02 = GS06 (AK905 4), GE present (3):
  also from the first pass; every set of a rejected group is an error;
- SE01 = segments ST..SE (IK502 4), SE02 = ST02 (IK502 3), SE present (2),
  a supported ST01 (IK502 1), the segments and elements of
  :mod:`parsers.x12.sets` (IK3/IK4, IK502 5).

Messages: each set is a ``Message`` (``type`` ST01, ``data`` a
:class:`~parsers.x12.model.TransactionSet`, ``control_id`` ``ISA13/GS06/ST02``,
``sender`` ``ISA06/GS02``, ``meta["variant"]`` e.g. ``837P``); a set with an
error carries a ``ParseError`` pointing at segment, position and element.
After each interchange comes a message of type ``"interchange"`` whose data is
the :class:`~parsers.x12.model.InterchangeReport` the TA1/999/997 are built
from (mappings turn it into outbox events); unless rejected, it is keyed by
``sender`` ``ISA05:ISA06`` and ``control_id`` ``ISA13``, so the pipeline
records a resent interchange as a duplicate (X12.5: ISA13 is unique per
sender) and the mapping answers it with a TA1 note 025. An unreadable ISA (no 16
elements) raises a file-level ``ParseError``: nothing after it can be framed.

Memory: one chunk plus the current transaction set (the 837 guide caps a set
at 5,000 claims), whatever the file size.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from pydantic import ConfigDict, Field

from bridge.errors import ParseError, Position
from parsers.base import Message, Parser, ParserConfig
from parsers.x12.model import (
    ElementIssue,
    FunctionalGroup,
    GroupReport,
    Interchange,
    InterchangeReport,
    SegmentIssue,
    SetReport,
    TransactionSet,
)
from parsers.x12.sets import SEGMENT_ID, SETS, is_number, segment_checks, variant
from parsers.x12.tokenizer import CHUNK_SIZE, IsaError, Tokenizer, read_isa

__all__ = ["X12Parser", "X12ParserConfig"]

log = logging.getLogger(__name__)

_ENVELOPE = frozenset(("ISA", "IEA", "GS", "GE", "ST", "SE", "TA1"))
_TA1_TEXT = {
    "001": "IEA02 does not match ISA13",
    "021": "IEA01 does not match the number of functional groups",
    "023": "the interchange ends without an IEA",
    "024": "the interchange holds content outside a functional group",
}
_AK9_TEXT = {
    "3": "the functional group ends without a GE",
    "4": "GE02 does not match GS06",
    "5": "GE01 does not match the number of transaction sets",
}
_IK5_TEXT = {
    "1": "transaction set {id} is not supported",
    "2": "the transaction set ends without an SE",
    "3": "SE02 does not match ST02",
    "4": "SE01 does not match the number of segments ST..SE",
}
_IK304_TEXT = {"1": "unrecognised segment id", "2": "unexpected segment", "3": "required segment missing",
               "8": "segment has data element errors"}
_IK403_TEXT = {"1": "required data element missing", "3": "too many data elements",
               "6": "invalid character in data element"}


class X12ParserConfig(ParserConfig):
    encoding: Literal["utf-8", "latin-1", "ascii"] = "utf-8"
    chunk_size: int = Field(CHUNK_SIZE, ge=4096, le=64 << 20)
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    #: ``validate: hipaa``: also validate 837/835 against the implementation guides with pyx12 (slow)
    validation: Literal["none", "hipaa"] = Field("none", alias="validate")
    #: transaction sets this channel accepts (ST01); empty: every recognised set
    sets: list[str] = Field(default_factory=list)


@dataclass
class _GroupVerdict:
    codes: list[str] = field(default_factory=list)


@dataclass
class _Verdict:
    """What the envelope-only first pass learnt about one interchange."""

    note: str = "000"
    reason: str | None = None
    groups: list[_GroupVerdict] = field(default_factory=list)


def prescan(stream: BinaryIO, *, name: str, chunk_size: int = CHUNK_SIZE, encoding: str = "utf-8") -> list[_Verdict]:
    """First pass: the trailer checks (IEA/GE counts and control numbers) per interchange.

    Only envelope segments matter here: with line breaks dropped, GS/GE/IEA are
    found by a literal-prefixed pattern and the STs between them counted with
    ``str.count``, both at C speed, instead of tokenizing every segment.
    """
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    out: list[_Verdict] = []
    eof = False

    def read() -> str:
        nonlocal eof
        data = stream.read(chunk_size)
        if not data:
            eof = True
            return decoder.decode(b"", final=True)
        return decoder.decode(data)

    buf = ""
    while True:
        while len(buf.lstrip()) < 256 and not eof:
            buf += read()
        buf = buf.lstrip(" \t\r\n\x00\ufeff")
        if not buf:
            return out
        try:
            els, delims, length = read_isa(buf, name=name)
        except IsaError as exc:
            if exc.elements is None or exc.delimiters is None or exc.length is None:
                return out  # the second pass raises it, after what came before
            els, delims, length = exc.elements, exc.delimiters, exc.length
        cur = _Verdict()
        out.append(cur)
        isa13 = els[13] if len(els) > 13 else ""
        buf = buf[length:]
        term, sep = delims.segment, delims.element
        drop = [c for c in "\r\n" if c != term]
        rare = re.compile(re.escape(term) + "(GS|GE|IEA)" + re.escape(sep))
        st = term + "ST" + sep
        groups, sets, gs06 = 0, 0, None
        ended = False
        while not ended:
            cut = buf.rfind(term)
            if cut < 0 and not eof:
                buf += read()
                continue
            raw = buf if eof else buf[: cut + 1]
            text = term + raw
            for c in drop:
                if c in text:
                    text = text.replace(c, "")
            at = 0
            for m in rare.finditer(text):
                sets += text.count(st, at, m.start())
                at = m.start() + 1
                tag = m.group(1)
                stop = text.find(term, m.end())
                rest = text[m.end() : stop if stop >= 0 else len(text)].split(sep)
                if tag == "GS":
                    if gs06 is not None:
                        cur.groups[-1].codes.append("3")
                    groups += 1
                    gs06 = rest[5] if len(rest) > 5 else ""
                    sets = 0
                    cur.groups.append(_GroupVerdict())
                elif tag == "GE":
                    if gs06 is None:
                        continue
                    g = cur.groups[-1]
                    if rest[0] != str(sets):
                        g.codes.append("5")
                    if (rest[1] if len(rest) > 1 else "") != gs06:
                        g.codes.append("4")
                    gs06 = None
                else:  # IEA
                    if gs06 is not None:
                        cur.groups[-1].codes.append("3")
                        gs06 = None
                    if rest[0] != str(groups):
                        cur.note, cur.reason = "021", _TA1_TEXT["021"]
                    if (rest[1] if len(rest) > 1 else "").strip() != isa13:
                        cur.note, cur.reason = "001", _TA1_TEXT["001"]
                    # what follows this IEA's terminator (in the raw text) is the next interchange
                    hit = re.search(re.escape(term) + "[\r\n]*IEA" + re.escape(sep), term + raw)
                    end = raw.find(term, hit.end() - 1) if hit is not None else -1
                    buf = (raw[end + 1 :] if end >= 0 else "") + buf[len(raw) :]
                    ended = True
                    break
            if ended:
                break
            sets += text.count(st, at)
            if eof:
                _close_open(cur, gs06)
                return out
            # keep the partial last segment, which starts right after a terminator
            buf = buf[cut + 1 :] + read()


def _close_open(cur: _Verdict, gs06: str | None) -> None:
    if gs06 is not None and cur.groups:
        cur.groups[-1].codes.append("3")
    cur.note, cur.reason = "023", _TA1_TEXT["023"]


def _excerpt(segments: list[str], term: str) -> bytes:
    out = term.join(segments[:8])
    return out.encode("utf-8", "replace")[:512]


class X12Parser(Parser):
    """X12 4010/5010 interchanges, streamed; see the module docstring for what is checked."""

    Config = X12ParserConfig
    config: X12ParserConfig

    def parse(self, stream: BinaryIO, *, name: str) -> Iterator[Message]:
        cfg = self.config
        verdicts: list[_Verdict] | None = None
        hipaa: dict[tuple[int, str, str], list[SegmentIssue]] = {}
        if not stream.seekable():
            # two passes need a seekable stream: spool (memory up to 8 MB, then a temp file)
            spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed below
            shutil.copyfileobj(stream, spool, 1 << 20)
            spool.seek(0)
            try:
                yield from self.parse(spool, name=name)  # type: ignore[arg-type]
            finally:
                spool.close()
            return
        if stream.seekable():
            start = stream.tell()
            verdicts = prescan(stream, name=name, chunk_size=cfg.chunk_size, encoding=cfg.encoding)
            if cfg.validation == "hipaa":
                stream.seek(start)
                hipaa = hipaa_issues(stream, name=name, encoding=cfg.encoding)
            stream.seek(start)
        yield from _Run(self, name, verdicts, hipaa).run(stream)


class _Run:
    """The state of one parse (one file): second pass, yielding messages."""

    def __init__(self, parser: X12Parser, name: str, verdicts: list[_Verdict] | None,
                 hipaa: dict[tuple[int, str, str], list[SegmentIssue]]) -> None:
        self.cfg = parser.config
        self.name = name
        self.verdicts = verdicts
        self.hipaa = hipaa
        self.index = 0
        self.accept = set(self.cfg.sets)

    def _next(self) -> int:
        i = self.index
        self.index += 1
        return i

    def run(self, stream: BinaryIO) -> Iterator[Message]:
        tok = Tokenizer(stream, name=self.name, chunk_size=self.cfg.chunk_size, encoding=self.cfg.encoding)
        name = self.name
        ic: Interchange | None = None
        report: InterchangeReport | None = None
        verdict = _Verdict()
        skipping = False
        skipped_sets = 0
        group: FunctionalGroup | None = None
        greport: GroupReport | None = None
        gcodes: list[str] = []
        ic_ordinal = 0
        g_ordinal = 0
        segs: list[str] | None = None
        issues: list[SegmentIssue] = []
        try:
            for batch in tok.batches():
                sep = tok.delimiters.element
                checks = segment_checks(sep)
                for text in batch:
                    k = text.find(sep)
                    tag = text[:k] if k >= 0 else text
                    if segs is not None and tag not in _ENVELOPE:
                        # the hot path: a segment inside a transaction set, kept as text
                        segs.append(text)
                        check = checks.get(tag)
                        if check is None:
                            if SEGMENT_ID.match(tag) is None:
                                issues.append(SegmentIssue(tag[:3] or "?", len(segs), "1"))
                            continue
                        mx, fast, rules = check
                        if mx is not None and text.count(sep) > mx:
                            issues.append(SegmentIssue(tag, len(segs), "8", elements=[ElementIssue(mx + 1, "3")]))
                        if fast is not None and fast.match(text) is None:
                            bad = _check_rules(text.split(sep), rules)
                            if bad:
                                issues.append(SegmentIssue(tag, len(segs), "8", elements=bad))
                        continue
                    els = text.split(sep)
                    if tag == "ISA":
                        if report is not None:
                            # no IEA before this ISA: close the previous interchange as it stands
                            if segs is not None and not skipping and ic is not None and group is not None and greport is not None:
                                yield from self._close_set(segs, issues, ic, group, greport, gcodes, None)
                            yield from self._close_interchange(report, verdict, skipping, skipped_sets)
                        segs = None
                        ic_ordinal += 1
                        g_ordinal = 0
                        group = greport = None
                        ic = Interchange.from_isa(els, tok.delimiters)
                        report = InterchangeReport(ic, file=name, ordinal=ic_ordinal)
                        verdict = (self.verdicts[ic_ordinal - 1] if self.verdicts and ic_ordinal <= len(self.verdicts)
                                   else _Verdict())
                        skipping = False
                        skipped_sets = 0
                        if tok.isa_error is not None:
                            verdict = _Verdict(tok.isa_error.note, tok.isa_error.reason)
                        if verdict.note != "000":
                            report.status, report.note, report.reason = "R", verdict.note, verdict.reason
                            skipping = True
                        continue
                    if report is None or ic is None:
                        continue  # cannot happen: the tokenizer starts every interchange at an ISA
                    if skipping:
                        if tag == "ST":
                            skipped_sets += 1
                        elif tag == "IEA":
                            yield from self._close_interchange(report, verdict, True, skipped_sets)
                            report = None
                            ic = None
                        continue
                    if tag == "ST":
                        if group is None or greport is None:
                            report.status, report.note = "R", "024"
                            report.reason = _TA1_TEXT["024"]
                            skipping, skipped_sets = True, 1
                            continue
                        if segs is not None:
                            yield from self._close_set(segs, issues, ic, group, greport, gcodes, None)
                        segs = [text]
                        issues = []
                        continue
                    if tag == "SE":
                        if segs is None or group is None or greport is None:
                            yield self._stray(tag, ic)
                            continue
                        segs.append(text)
                        yield from self._close_set(segs, issues, ic, group, greport, gcodes, els)
                        segs = None
                        continue
                    if segs is not None and group is not None and greport is not None:
                        # GS/GE/IEA inside a set: its SE is missing
                        yield from self._close_set(segs, issues, ic, group, greport, gcodes, None)
                        segs = None
                    if tag == "GS":
                        g_ordinal += 1
                        group = FunctionalGroup.from_gs(els)
                        greport = GroupReport(group)
                        report.groups.append(greport)
                        gv = verdict.groups[g_ordinal - 1] if g_ordinal <= len(verdict.groups) else _GroupVerdict()
                        gcodes = list(gv.codes)
                        greport.codes = list(gcodes)
                        if gcodes:
                            greport.status = "R"
                    elif tag == "GE":
                        if greport is not None:
                            greport.declared = int(els[1]) if len(els) > 1 and els[1].isdigit() else None
                            self._finish_group(greport)
                        group = greport = None
                    elif tag == "IEA":
                        if greport is not None:
                            self._finish_group(greport)
                        group = greport = None
                        yield from self._close_interchange(report, verdict, False, 0)
                        report = None
                        ic = None
                    elif tag == "TA1":
                        continue  # a partner's TA1 about our interchange: not acknowledged back
                    else:
                        yield self._stray(tag, ic)
            if report is not None:
                if segs is not None and not skipping and ic is not None and group is not None and greport is not None:
                    yield from self._close_set(segs, issues, ic, group, greport, gcodes, None)
                if greport is not None:
                    self._finish_group(greport)
                if not skipping and report.note == "000" and self.verdicts is None:
                    report.status, report.note, report.reason = "R", "023", _TA1_TEXT["023"]
                yield from self._close_interchange(report, verdict, skipping, skipped_sets)
        except IsaError as exc:
            raise ParseError(f"interchange {tok.interchanges}: {exc.reason}; the rest of the file cannot be "
                             "framed", exc.position.with_(file=name, message=self.index)) from None

    # -- closing ----------------------------------------------------------------

    def _finish_group(self, greport: GroupReport) -> None:
        if greport.status == "R":
            return
        accepted = greport.accepted
        if not greport.sets:
            greport.status = "A"
        elif accepted == len(greport.sets):
            greport.status = "A"
        elif accepted == 0:
            greport.status = "R"
        else:
            greport.status = "P"

    def _stray(self, tag: str, ic: Interchange) -> Message:
        idx = self._next()
        pos = Position(file=self.name, message=idx, segment=tag[:3], control=ic.control)
        return Message(idx, "segment", None, pos, error=ParseError(
            f"segment {tag[:3]!r} outside a transaction set", pos))

    def _close_set(self, segs: list[str], issues: list[SegmentIssue], ic: Interchange,
                   group: FunctionalGroup, greport: GroupReport, gcodes: list[str],
                   se: list[str] | None) -> Iterator[Message]:
        sep = ic.delimiters.element
        st = segs[0].split(sep)
        set_id = st[1] if len(st) > 1 else ""
        control = st[2] if len(st) > 2 else ""
        impl = (st[3] if len(st) > 3 and st[3] else group.version)
        sreport = SetReport(set_id, control, impl)
        greport.sets.append(sreport)
        codes = sreport.codes
        spec = SETS.get(set_id)
        if spec is None or (self.accept and set_id not in self.accept):
            codes.append("1")
        if se is None:
            codes.append("2")
        else:
            if (se[1] if len(se) > 1 else "") != str(len(segs)):
                codes.append("4")
            if (se[2] if len(se) > 2 else "") != control:
                codes.append("3")
        if spec is not None and "1" not in codes:
            for req in spec.required:
                prefix = req + sep
                if not any(t.startswith(prefix) for t in segs):
                    issues.append(SegmentIssue(req, len(segs), "3"))
        extra = self.hipaa.get((self._ic_key(ic), group.control, control))
        if extra:
            issues.extend(extra)
        sreport.issues = issues
        if issues:
            codes.append("5")
        if codes:
            sreport.status = "R"
        idx = self._next()
        control_path = f"{ic.control}/{group.control}/{control}"
        sender = f"{ic.sender}/{group.sender}"
        pos = Position(file=self.name, message=idx, segment="ST", segment_index=1, control=control_path)
        error: ParseError | None = None
        if codes:
            error = self._set_error(set_id, codes, issues, pos, len(segs))
        elif gcodes:
            why = "; ".join(_AK9_TEXT.get(c, c) for c in gcodes)
            error = ParseError(f"functional group {group.control} rejected ({why}); its transaction sets are not "
                               "processed", pos.with_(segment="GE"))
        if error is not None:
            delims = ic.delimiters
            yield Message(idx, set_id or "?", None, pos, control_id=control_path, sender=sender, error=error,
                          raw=_excerpt(segs, delims.segment))
            return
        tset = TransactionSet(set_id, control, impl, ic, group, segs)
        yield Message(idx, set_id, tset, pos, control_id=control_path, sender=sender,
                      meta={"variant": variant(set_id, impl), "version": group.version})

    @staticmethod
    def _ic_key(ic: Interchange) -> int:
        return int(ic.control) if ic.control.isdigit() else -1

    def _set_error(self, set_id: str, codes: list[str], issues: list[SegmentIssue], pos: Position,
                   count: int) -> ParseError:
        if "1" in codes:
            return ParseError(_IK5_TEXT["1"].format(id=set_id or "(empty ST01)") + "; rejected in the 999/997",
                              pos.with_(field="ST01"))
        if "2" in codes:
            return ParseError(_IK5_TEXT["2"], pos.with_(segment="SE"))
        if issues:
            first = issues[0]
            what = _IK304_TEXT.get(first.code or "", "segment error")
            fld = None
            if first.elements:
                el = first.elements[0]
                what = _IK403_TEXT.get(el.code, f"element error {el.code}")
                fld = f"{first.segment}{el.position:02d}"
            more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
            # a missing segment has no position of its own (IK302 points at the SE)
            index = None if first.code == "3" else first.position
            return ParseError(f"{what}{more}", pos.with_(segment=first.segment, segment_index=index, field=fld))
        if "4" in codes:
            return ParseError(f"{_IK5_TEXT['4']} ({count})", pos.with_(segment="SE", segment_index=count,
                                                                      field="SE01"))
        return ParseError(_IK5_TEXT["3"], pos.with_(segment="SE", segment_index=count, field="SE02"))

    def _close_interchange(self, report: InterchangeReport, verdict: _Verdict, skipped: bool,
                           skipped_sets: int) -> Iterator[Message]:
        ic = report.interchange
        if report.rejected:
            idx = self._next()
            pos = Position(file=self.name, message=idx, segment="ISA", segment_index=1, control=ic.control)
            if report.note in ("001", "021"):
                pos = pos.with_(segment="IEA", field="IEA02" if report.note == "001" else "IEA01")
            yield Message(idx, "interchange", None, pos, error=ParseError(
                f"interchange {ic.control or '?'} rejected: {report.reason}; its {skipped_sets} transaction "
                "set(s) were not processed (a TA1 answers it)", pos))
        idx = self._next()
        pos = Position(file=self.name, message=idx, segment="IEA", control=ic.control)
        # keyed by (ISA05:ISA06, ISA13): the pipeline finds a resent interchange by it (TA1 note 025);
        # a rejected one is not keyed, so the partner may send it again corrected, same ISA13
        key, sender = (None, None) if report.rejected else (ic.control, f"{ic.sender_qualifier}:{ic.sender}")
        yield Message(idx, "interchange", report, pos, control_id=key, sender=sender, meta={"ack": True})


def _check_rules(els: list[str], rules: dict[int, str]) -> list[ElementIssue]:
    bad: list[ElementIssue] = []
    n = len(els)
    for p, rule in rules.items():
        value = els[p] if p < n else ""
        if not value:
            if rule != "N":
                bad.append(ElementIssue(p, "1"))
        elif rule != "R" and not is_number(value):
            bad.append(ElementIssue(p, "6"))
    return bad


def hipaa_issues(stream: BinaryIO, *, name: str, encoding: str = "utf-8") -> dict[tuple[int, str, str], list[SegmentIssue]]:
    """Validate with pyx12 against the HIPAA implementation guides (837, 835 ...).

    Returns IK3/IK4-shaped issues keyed by (ISA13 as int, GS06, ST02). Only
    codes, segment ids and positions are kept: pyx12's texts may quote data.
    A set pyx12 has no map for (supply-chain sets) is skipped, not failed.
    """
    import pyx12.error_handler  # noqa: F401 - imported for its side effects on pyx12's logging
    import pyx12.params
    import pyx12.x12n_document

    param = pyx12.params.params()
    fd_json = io.StringIO()
    logging.getLogger("pyx12").setLevel(logging.CRITICAL)
    # pyx12 reads a text stream as it goes: wrap ours rather than read the file into memory
    text = io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline="")  # type: ignore[arg-type]
    try:
        pyx12.x12n_document.x12n_document(param, text, None, None, fd_json=fd_json)
    except Exception as exc:  # noqa: BLE001 - pyx12 raises EngineError and plain errors; none may stop the file
        log.warning("pyx12 could not validate %s: %s", name, type(exc).__name__)
        return {}
    finally:
        text.detach()
    out: dict[tuple[int, str, str], list[SegmentIssue]] = {}
    try:
        doc = json.loads(fd_json.getvalue() or "{}")
    except ValueError:
        return {}
    for isa in doc.get("interchanges", []):
        try:
            isa13 = int(str(isa.get("isa_trn_set_id", "")).strip())
        except ValueError:
            isa13 = -1
        for gs in isa.get("groups", []):
            for st in gs.get("transactions", []):
                issues: list[SegmentIssue] = []
                for seg in st.get("segments", []):
                    code = next((e["err_cde"] for e in seg.get("errors", [])), "8")
                    elements = [ElementIssue(int(e.get("ele_pos") or 0), next(
                        (x["err_cde"] for x in e.get("errors", [])), "7"), str(e.get("ele_ref_num") or ""))
                        for e in seg.get("elements", [])]
                    issues.append(SegmentIssue(str(seg.get("seg_id", "?")), int(seg.get("seg_count") or 0),
                                               str(code), str(seg.get("ls_id") or ""), elements))
                if issues:
                    out[(isa13, str(gs.get("gs_control_num", "")), str(st.get("trn_set_control_num", "")))] = issues
    return out
