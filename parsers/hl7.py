"""HL7 v2 (2.3 to 2.8): a lazy tokenizer that streams messages out of files and MLLP frames.

This module owns reading HL7 v2 text: finding message boundaries in a byte
stream (single messages or FHS/BHS batches, HL7 v2.5.1 chapter 2.10.3), the
encoding characters of each message (MSH-1 and MSH-2, chapter 2.5.4), the
character set (configuration or MSH-18, HL7 table 0211), escape sequences
(chapter 2.7: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\``, decoded on access) and
the positions an error points at. It leaves the meaning of fields to
``mappings/hl7_*`` and the transport to ``bridge/sources/mllp.py``.

The public nouns are the standard's: :class:`Message`, :class:`Segment`,
:class:`Field`, :class:`Repetition`, :class:`Component`. Nothing is split
until it is asked for: a segment splits its fields on first access, a field
its repetitions and components only when addressed, and escapes are decoded
only when a value is read. ``message["FT1", 2]["FT1-10"]``-style access is
spelled ``message.segments("FT1")[1].value(10)``.

Segment terminators ``\\r`` (the standard), ``\\n`` and ``\\r\\n`` are all
accepted. Z-segments and segments this module does not know are kept and
addressable like any other. hl7apy is used only when a channel asks for
``validate: strict`` (its structural validation, checked so that no segment
is silently dropped, see :func:`validate_strict`): it is about 100 times slower.

Errors: a message that cannot be read (no MSH, a bad field separator, a
truncated MSH, bytes not valid in its character set, over the size limit)
is yielded as a :class:`parsers.base.Message` with ``error`` set, naming the
message index, the segment and its ordinal and the field; the rest of the
batch goes on. An empty file, or a batch that ends without its BTS/FTS
trailer (a truncated file), raises :class:`~bridge.errors.ParseError` for the
file. Error texts never quote field values (they may be PHI).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Literal

from pydantic import Field as PydanticField

from bridge.errors import ParseError, Position
from parsers import base

__all__ = [
    "Component",
    "Encoding",
    "Field",
    "HL7Parser",
    "HL7ParserConfig",
    "Message",
    "Repetition",
    "Segment",
    "parse_message",
    "parse_ref",
    "split_messages",
]

_CHUNK = 1024 * 1024
_MAX_EXCERPT = 512
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
#: HL7 table 0211 (alternate character sets, MSH-18) -> Python codec
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5",
    "BIG-5": "big5",
    # not in table 0211, but what many Windows engines put there
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
}
_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


# -- encoding characters and escapes ---------------------------------------------


class Encoding:
    """The delimiters of one message (MSH-1, MSH-2): field, component, repetition, escape, subcomponent."""

    __slots__ = ("component", "escape", "field", "repetition", "subcomponent", "truncation")

    def __init__(self, field: str = "|", component: str = "^", repetition: str = "~", escape: str = "\\",
                 subcomponent: str = "&", truncation: str | None = None) -> None:
        self.field = field
        self.component = component
        self.repetition = repetition
        self.escape = escape
        self.subcomponent = subcomponent
        #: HL7 v2.7 added a fifth encoding character (truncation, ``#``); it is not a delimiter
        self.truncation = truncation

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + (self.truncation or "")

    def escape_text(self, text: str) -> str:
        """Escape delimiters in ``text`` for writing (chapter 2.7.1); the inverse of :meth:`unescape`."""
        e = self.escape
        if not text:
            return text
        if e and e in text:
            text = text.replace(e, f"{e}E{e}")
        for ch, code in ((self.field, "F"), (self.component, "S"), (self.subcomponent, "T"),
                         (self.repetition, "R")):
            if ch and ch in text:
                text = text.replace(ch, f"{e}{code}{e}")
        if "\r" in text or "\n" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")
        return text

    def unescape(self, value: str, charset: str = "utf-8") -> str:
        """Decode the escape sequences of HL7 v2.5.1 chapter 2.7 in one value.

        ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` become the delimiters, ``\\Xhh..\\`` the bytes
        ``hh..`` read in ``charset``, ``\\.br\\`` a line break; the highlighting
        marks ``\\H\\``/``\\N\\`` are dropped; other sequences (``\\Cxxyy\\``,
        ``\\Mxxyyzz\\``, ``\\Zxx\\``, ``\\.sp\\``...) are kept as they are. An
        escape character without its closing one is kept literally.
        """
        e = self.escape
        if not e or e not in value:
            return value
        out: list[str] = []
        i = 0
        n = len(value)
        while i < n:
            j = value.find(e, i)
            if j < 0:
                out.append(value[i:])
                break
            out.append(value[i:j])
            k = value.find(e, j + 1)
            if k < 0:
                out.append(value[j:])
                break
            seq = value[j + 1 : k]
            if seq == "F":
                out.append(self.field)
            elif seq == "S":
                out.append(self.component)
            elif seq == "T":
                out.append(self.subcomponent)
            elif seq == "R":
                out.append(self.repetition)
            elif seq == "E":
                out.append(e)
            elif seq in ("H", "N"):
                pass
            elif seq == ".br":
                out.append("\n")
            elif seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
                try:
                    out.append(bytes.fromhex(seq[1:]).decode(charset, errors="replace"))
                except ValueError:
                    out.append(value[j : k + 1])
            else:
                out.append(value[j : k + 1])
            i = k + 1
        return "".join(out)


DEFAULT_ENCODING = Encoding()


# -- the standard's nouns ----------------------------------------------------------


class _Part:
    """What a component, a repetition and a field share: their raw text, decoded on request."""

    __slots__ = ("_enc", "_cs", "raw")

    def __init__(self, raw: str, enc: Encoding, charset: str) -> None:
        self.raw = raw
        self._enc = enc
        self._cs = charset

    @property
    def value(self) -> str:
        return self._enc.unescape(self.raw, self._cs)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<{len(self.raw)} chars>)"


class Component(_Part):
    """One component of a repetition (``^``); its subcomponents are split on ``&``."""

    __slots__ = ()

    @property
    def subcomponents(self) -> list[str]:
        return [self._enc.unescape(s, self._cs) for s in self.raw.split(self._enc.subcomponent)]


class Repetition(_Part):
    """One occurrence of a repeating field (``~``), made of components (``^``)."""

    __slots__ = ()

    @property
    def components(self) -> list[Component]:
        return [Component(c, self._enc, self._cs) for c in self.raw.split(self._enc.component)]

    def component(self, number: int, subcomponent: int = 1) -> str:
        """The decoded value of component ``number`` (1-based), or ``""``."""
        return _pick(self.raw, self._enc, self._cs, 1, number, subcomponent)


class Field(_Part):
    """One field of a segment; a repeating field holds several :class:`Repetition`s (``~``)."""

    __slots__ = ()

    @property
    def repetitions(self) -> list[Repetition]:
        if not self.raw:
            return []
        return [Repetition(r, self._enc, self._cs) for r in self.raw.split(self._enc.repetition)]

    def repetition(self, number: int = 1) -> Repetition:
        reps = self.raw.split(self._enc.repetition)
        return Repetition(reps[number - 1] if number <= len(reps) else "", self._enc, self._cs)

    def component(self, number: int, subcomponent: int = 1) -> str:
        return self.repetition(1).component(number, subcomponent)

    def __bool__(self) -> bool:
        return bool(self.raw) and self.raw != '""'


def _nth(parts: list[str], number: int) -> str:
    """Part ``number`` (1-based) of a split value, or ``""`` when it has fewer parts."""
    return parts[number - 1] if number <= len(parts) else ""


def _pick(raw: str, enc: Encoding, charset: str, repetition: int, component: int, subcomponent: int) -> str:
    """The decoded value at ``repetition``, ``component``, ``subcomponent`` (1-based) of a raw field.

    The one walk down a field, for :meth:`Segment.value` and
    :meth:`Repetition.component`: only what the value holds is split, escapes
    are decoded only when the escape character is there. A missing part is
    ``""``; so is the HL7 null ``""``.
    """
    if repetition > 1 or enc.repetition in raw:
        reps = raw.split(enc.repetition)
        raw = reps[repetition - 1] if repetition <= len(reps) else ""
    if component > 1 or enc.component in raw:
        comps = raw.split(enc.component)
        raw = comps[component - 1] if component <= len(comps) else ""
    if subcomponent > 1 or enc.subcomponent in raw:
        subs = raw.split(enc.subcomponent)
        raw = subs[subcomponent - 1] if subcomponent <= len(subs) else ""
    if raw == '""':
        return ""
    if enc.escape and enc.escape in raw:
        return enc.unescape(raw, charset)
    return raw


class Segment:
    """One segment: its id (``FT1``), its 1-based ordinal among segments of that id, its fields.

    Field numbers are the standard's: ``segment.value(10)`` is FT1-10. For MSH,
    MSH-1 is the field separator itself and MSH-2 the encoding characters, as
    in the standard's numbering.
    """

    __slots__ = ("_cs", "_enc", "_fields", "_pos", "id", "index", "ordinal", "raw")

    def __init__(self, raw: str, message: Message, index: int, ordinal: int) -> None:
        self.raw = raw
        self.id = raw[:3]
        # no reference back to the message: without the cycle, segments are freed by
        # reference counting, and the cyclic GC (2/3 of the build time) has nothing to chase
        self._enc = message.encoding
        self._cs = message.charset
        self._pos = message.position
        #: 0-based position among all segments of the message
        self.index = index
        #: 1-based ordinal among segments with the same id ("FT1 #2")
        self.ordinal = ordinal
        self._fields: list[str] | None = None

    @property
    def fields(self) -> list[str]:
        """Raw field strings, indexed by field number (``fields[0]`` is the segment id)."""
        f = self._fields
        if f is None:
            enc = self._enc
            f = self.raw.split(enc.field)
            if self.id == "MSH":
                # MSH-1 is the separator itself; MSH-2 the encoding characters
                f = ["MSH", enc.field, *f[1:]]
            self._fields = f
        return f

    def __len__(self) -> int:
        """The number of fields present (the highest field number)."""
        return len(self.fields) - 1

    def field(self, number: int) -> Field:
        f = self.fields
        return Field(f[number] if number < len(f) else "", self._enc, self._cs)

    def raw_value(self, number: int) -> str:
        f = self.fields
        return f[number] if number < len(f) else ""

    def value(self, number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        """The decoded value of ``<id>-number.component.subcomponent`` in ``repetition`` (all 1-based).

        The hot path: no objects are built, and escapes are decoded only when
        the value holds the escape character. A missing field, component or
        repetition is ``""``; the HL7 null ``""`` is returned as ``""`` too.
        MSH-1 and MSH-2 are returned as they are (they hold the delimiters).
        """
        f = self._fields
        if f is None:
            f = self.fields
        if number >= len(f):
            return ""
        raw = f[number]
        if not raw:
            return ""
        if number <= 2 and self.id == "MSH":
            return raw
        return _pick(raw, self._enc, self._cs, repetition, component, subcomponent)

    def values(self, refs: Sequence[tuple[int, int, int]]) -> list[str]:
        """The decoded values at ``(field, component, subcomponent)`` positions, first repetition each.

        What :meth:`value` returns for each position, in one call: a mapping
        reading a dozen fields of every FT1 paid more for the calls than for
        the reading. A plain value (no delimiter, no escape) is returned as it
        is without a walk.
        """
        f = self.fields
        n = len(f)
        enc = self._enc
        raw_segment = self.raw
        comp = enc.component
        if (enc.repetition not in raw_segment and enc.subcomponent not in raw_segment and '""' not in raw_segment
                and (not enc.escape or enc.escape not in raw_segment) and self.id != "MSH"):
            # a plain segment, the common case: no repetition, subcomponent, escape or HL7 null
            # anywhere in it, so a value is at most one split on the component separator
            return ["" if number >= n or subcomponent > 1 else
                    f[number].partition(comp)[0] if component == 1 else
                    _nth(f[number].split(comp), component)
                    for number, component, subcomponent in refs]
        cs = self._cs
        specials = (enc.component, enc.repetition, enc.subcomponent, enc.escape or enc.component)
        c0, c1, c2, c3 = specials
        msh = self.id == "MSH"
        out: list[str] = []
        for number, component, subcomponent in refs:
            raw = f[number] if number < n else ""
            if not raw or (msh and number <= 2):
                out.append(raw)
            elif (component == 1 and subcomponent == 1 and raw != '""'
                  and c0 not in raw and c1 not in raw and c2 not in raw and c3 not in raw):
                out.append(raw)
            else:
                out.append(_pick(raw, enc, cs, 1, component, subcomponent))
        return out

    def repetitions(self, number: int) -> list[Repetition]:
        return self.field(number).repetitions

    def position(self, number: int | None = None, component: int | None = None) -> Position:
        """Where this segment (or one of its fields) is, for an error."""
        ref = None
        if number is not None:
            ref = f"{self.id}-{number}" + (f".{component}" if component else "")
        p = self._pos
        # built directly: dataclasses.replace costs several times more, and this runs per FT1
        return Position(file=p.file, message=p.message, segment=self.id, segment_index=self.ordinal, field=ref,
                        control=p.control)

    def __repr__(self) -> str:
        return f"Segment({self.id} #{self.ordinal}, {len(self)} fields)"


class Message:
    """One HL7 v2 message: its segments (split lazily), encoding characters and header values.

    ``type`` is ``MSH-9.1^MSH-9.2`` (``"DFT^P03"``), ``structure`` MSH-9.3 when
    sent, ``control_id`` MSH-10, ``version`` MSH-12, ``sender`` the sending
    application and facility (MSH-3.1 and MSH-4.1, as ``app@facility``).
    """

    __slots__ = ("_by_id", "_msh", "_segments", "_sender", "_type", "charset", "encoding", "position",
                 "raw_segments")

    def __init__(self, raw_segments: list[str], encoding: Encoding, charset: str = "utf-8",
                 position: Position | None = None) -> None:
        self.raw_segments = raw_segments
        self.encoding = encoding
        self.charset = charset
        self.position = position or Position()
        self._segments: list[Segment] | None = None
        self._by_id: dict[str, list[Segment]] | None = None
        self._msh: Segment | None = None
        # the header values every mapping and the parser itself read: computed once
        self._type: str | None = None
        self._sender: str | None = None

    def _build(self) -> None:
        segs: list[Segment] = []
        by_id: dict[str, list[Segment]] = {}
        for i, raw in enumerate(self.raw_segments):
            sid = raw[:3]
            same = by_id.get(sid)
            if same is None:
                same = by_id[sid] = []
            seg = self._msh if i == 0 and self._msh is not None else Segment(raw, self, i, len(same) + 1)
            same.append(seg)
            segs.append(seg)
        self._segments = segs
        self._by_id = by_id

    @property
    def all_segments(self) -> list[Segment]:
        if self._segments is None:
            self._build()
        assert self._segments is not None
        return self._segments

    def segments(self, segment_id: str) -> list[Segment]:
        """Every segment with this id, in order (``[]`` if none)."""
        if self._by_id is None:
            self._build()
        assert self._by_id is not None
        return self._by_id.get(segment_id, [])

    def segment(self, segment_id: str, ordinal: int = 1) -> Segment | None:
        same = self.segments(segment_id)
        return same[ordinal - 1] if ordinal <= len(same) else None

    def __getitem__(self, segment_id: str) -> Segment:
        seg = self.segment(segment_id)
        if seg is None:
            raise KeyError(segment_id)
        return seg

    def __contains__(self, segment_id: str) -> bool:
        return bool(self.segments(segment_id))

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.all_segments)

    def __len__(self) -> int:
        return len(self.raw_segments)

    def value(self, ref: str) -> str:
        """A value by reference: ``"PID-3"``, ``"PV1-19.1"``, ``"FT1[2]-10"``, ``"ZFT-1.2.1"``."""
        sid, ordinal, number, comp, sub = parse_ref(ref)
        seg = self.segment(sid, ordinal)
        return "" if seg is None else seg.value(number, comp, sub)

    @property
    def msh(self) -> Segment:
        """The header, without splitting the rest of the message."""
        if self._msh is None:
            self._msh = Segment(self.raw_segments[0], self, 0, 1)
        return self._msh

    @property
    def type(self) -> str:
        if self._type is None:
            msh = self.msh
            code = msh.value(9, 1)
            event = msh.value(9, 2)
            self._type = f"{code}^{event}" if event else code
        return self._type

    @property
    def structure(self) -> str:
        return self.msh.value(9, 3)

    @property
    def control_id(self) -> str:
        return self.msh.value(10)

    @property
    def version(self) -> str:
        return self.msh.value(12)

    @property
    def sender(self) -> str:
        if self._sender is None:
            msh = self.msh
            app = msh.value(3, 1)
            fac = msh.value(4, 1)
            self._sender = f"{app}@{fac}" if fac else app
        return self._sender

    def text(self) -> str:
        """The message as the standard writes it (segments ended by ``\\r``)."""
        return "\r".join(self.raw_segments) + "\r"

    def __repr__(self) -> str:
        return f"Message({len(self.raw_segments)} segments)"


_REF = re.compile(r"^([A-Z0-9]{3})(?:\[(\d+)\])?-(\d+)(?:\.(\d+))?(?:\.(\d+))?$")


@functools.lru_cache(maxsize=256)
def parse_ref(ref: str) -> tuple[str, int, int, int, int]:
    m = _REF.match(ref)
    if m is None:
        raise ValueError(f"not an HL7 field reference: {ref!r} (expected like 'FT1-10' or 'PID-3.1')")
    sid, ordinal, number, comp, sub = m.groups()
    return sid, int(ordinal or 1), int(number), int(comp or 1), int(sub or 1)


# -- reading -----------------------------------------------------------------------


class _LongSegment(bytes):
    """The head of a segment longer than the size limit (the rest was read and dropped)."""


def _segments(stream: BinaryIO, max_bytes: int | None = None) -> Iterator[bytes]:
    """Non-empty segments of a byte stream, whatever the terminator (``\\r``, ``\\n``, ``\\r\\n``).

    A ``\\r`` at the end of one chunk and ``\\n`` at the start of the next
    make an empty segment, which is skipped like any blank line. A segment
    longer than ``max_bytes`` is not kept whole: its head is yielded as a
    ``_LongSegment``, so memory stays bounded whatever the input.
    """
    carry = b""
    skipping = False
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        data = carry + chunk if carry else chunk
        if b"\n" in data:
            data = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        parts = data.split(b"\r")
        carry = parts.pop()
        for p in parts:
            if skipping:
                skipping = False
                continue
            if p and not p.isspace():
                yield p
        if max_bytes is not None and len(carry) > max_bytes and not skipping:
            yield _LongSegment(carry[:1024])
            skipping = True
        if skipping:
            carry = b""
    if carry and not carry.isspace() and not skipping:
        yield carry


def split_messages(stream: BinaryIO, *, max_bytes: int | None = None) -> Iterator[tuple[str, list[bytes], int]]:
    """Group segments into messages: yields (kind, segments, size) with kind ``msh``, ``orphan``,
    ``oversize`` or an envelope id (``FHS``, ``BHS``, ``BTS``, ``FTS``, one segment each).

    ``orphan`` is a run of segments with no MSH before it; ``oversize`` a
    message whose bytes passed ``max_bytes`` (only its first segments are kept).
    """
    current: list[bytes] | None = None
    kind = "msh"
    size = 0
    for seg in _segments(stream, max_bytes):
        head = seg[:3]
        if head == b"MSH" or head in _ENVELOPE:
            if current is not None:
                yield kind, current, size
                current = None
            if head != b"MSH":
                yield head.decode("ascii"), [seg], len(seg)
                continue
            current, kind, size = [seg], "msh", len(seg) + 1
            if isinstance(seg, _LongSegment):
                kind = "oversize"
            continue
        if current is None:
            current, kind, size = [], "orphan", 0
        size += len(seg) + 1
        if isinstance(seg, _LongSegment):
            size = max(size, (max_bytes or 0) + 1)
        if max_bytes is not None and size > max_bytes:
            if kind == "msh":
                kind = "oversize"
            if current:
                continue  # keep counting, stop keeping
        current.append(seg)
    if current is not None:
        yield kind, current, size


def encoding_from_msh(msh: bytes) -> Encoding:
    """Read MSH-1/MSH-2 or raise ParseError (the position is added by the caller)."""
    if len(msh) < 8:
        raise ParseError("MSH is truncated: it ends before MSH-2 (encoding characters)")
    fs = chr(msh[3])
    if fs.isalnum() or fs.isspace() or msh[3] > 0x7E:
        raise ParseError("MSH-1 (field separator) is not a printable non-alphanumeric character")
    rest = msh[4:].decode("ascii", errors="replace")
    end = rest.find(fs)
    msh2 = rest if end < 0 else rest[:end]
    if len(msh2) > 5:
        raise ParseError(f"MSH-1 declares the field separator {fs!r}, but MSH-2 then runs {len(msh2)} characters: "
                         "wrong field separator?")
    if not 2 <= len(msh2) <= 5:
        raise ParseError(f"MSH-2 (encoding characters) has {len(msh2)} characters; 4 are expected "
                         "(component, repetition, escape, subcomponent)")
    if any(c.isalnum() or c.isspace() or c == "\ufffd" for c in msh2) or len(set(msh2 + fs)) != len(msh2) + 1:
        raise ParseError("MSH-2 (encoding characters) must be distinct non-alphanumeric characters, "
                         "different from MSH-1")
    comp = msh2[0]
    rep = msh2[1] if len(msh2) > 1 else "~"
    esc = msh2[2] if len(msh2) > 2 else ""
    sub = msh2[3] if len(msh2) > 3 else "&"
    trunc = msh2[4] if len(msh2) > 4 else None
    return Encoding(fs, comp, rep, esc, sub, trunc)


def parse_message(data: bytes | str, *, charset: str | None = None, default_charset: str = "utf-8",
                  position: Position | None = None) -> Message:
    """Parse one message (bytes as received, or text); raise ParseError when it cannot be read.

    Any of the three terminators is accepted. For repeated use on a stream,
    :class:`HL7Parser` is the streaming form with per-message errors.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
        charset = "utf-8"
    import io

    parser = HL7Parser(HL7ParserConfig(charset=charset, default_charset=default_charset))  # type: ignore[arg-type]
    for envelope in parser.parse(io.BytesIO(data), name=(position.file if position else None) or "message"):
        if envelope.error is not None:
            raise envelope.error
        msg: Message = envelope.data
        return msg
    raise ParseError("no HL7 message in the data", position or Position())


class HL7ParserConfig(base.ParserConfig):
    #: force this character set, ignoring MSH-18 (a Python codec name: utf-8, cp1252, latin-1...)
    charset: str | None = None
    #: used when MSH-18 is empty or ``charset`` is not set
    default_charset: str = "utf-8"
    #: read MSH-18 (HL7 table 0211) to choose the character set
    use_msh18: bool = True
    #: undecodable bytes: fail the message (``error``) or replace them with U+FFFD (``replace``)
    decode_errors: Literal["error", "replace"] = "error"
    #: a message larger than this is rejected (its bytes stay in the archive)
    max_message_bytes: int = PydanticField(16 * 1024 * 1024, ge=1024)
    #: ``strict``: also run hl7apy's structural validation on each message (slow: ~20-50 msg/s)
    validate_: Literal["none", "strict"] = PydanticField("none", alias="validate")

    model_config = base.ParserConfig.model_config | {"populate_by_name": True}


class HL7Parser(base.Parser):
    """HL7 v2 messages from a file (single messages or FHS/BHS batches) or an MLLP frame."""

    Config = HL7ParserConfig
    config: HL7ParserConfig

    def parse(self, stream: BinaryIO, *, name: str) -> Iterator[base.Message]:
        cfg = self.config
        index = 0
        open_batches: list[str] = []
        batch_count = 0
        seen_any = False
        for kind, segs, size in split_messages(stream, max_bytes=cfg.max_message_bytes):
            seen_any = True
            if kind in ("FHS", "BHS"):
                open_batches.append(kind)
                if kind == "BHS":
                    batch_count = 0
                continue
            if kind in ("BTS", "FTS"):
                opener = "BHS" if kind == "BTS" else "FHS"
                if opener in open_batches:
                    open_batches.remove(opener)
                if kind == "BTS":
                    declared = _envelope_count(segs[0])
                    if declared is not None and declared != batch_count:
                        raise ParseError(f"BTS-1 declares {declared} messages but the batch holds {batch_count}: "
                                         "the batch is incomplete", Position(file=name, segment="BTS"))
                continue
            batch_count += 1
            yield self._message(kind, segs, size, index, name)
            index += 1
        if not seen_any:
            raise ParseError("file holds no HL7 segments", Position(file=name))
        if open_batches:
            raise ParseError(f"file ends without the {'/'.join('BTS' if b == 'BHS' else 'FTS' for b in open_batches)} "
                             f"trailer after message {index - 1}: the batch is truncated",
                             Position(file=name, message=index - 1 if index else None))
        if index == 0:
            raise ParseError("file holds a batch envelope but no MSH message", Position(file=name))

    def _message(self, kind: str, segs: list[bytes], size: int, index: int, name: str) -> base.Message:
        cfg = self.config
        data = b"\r".join(segs)
        excerpt = data[:_MAX_EXCERPT]
        if kind == "orphan":
            first = segs[0][:3].decode("ascii", errors="replace")
            known = bool(_SEGMENT_ID.match(first))
            pos = Position(file=name, message=index, segment=first if known else None)
            return base.Message(index, "unknown", None, pos, raw=excerpt, error=ParseError(
                f"message does not begin with MSH (its first segment is {first if known else 'unreadable'})",
                pos.with_(segment_index=1 if known else None)))
        msh = segs[0]
        fsb = msh[3:4]
        cut = msh.find(fsb, 4) if fsb else -1
        key = msh[: cut + 1] if cut > 0 else None
        enc = _ENCODINGS.get(key) if key is not None else None
        if enc is None:
            try:
                enc = encoding_from_msh(msh)
            except ParseError as exc:
                pos = Position(file=name, message=index, segment="MSH", segment_index=1,
                               field="MSH-1" if "MSH-1" in exc.reason else "MSH-2")
                return base.Message(index, "unknown", None, pos, raw=excerpt, error=ParseError(exc.reason, pos))
            if key is not None and len(_ENCODINGS) < 64:
                _ENCODINGS[key] = enc
        head = msh.split(fsb)
        control = head[9].decode("ascii", errors="replace")[:64] if len(head) > 9 else None
        pos = Position(file=name, message=index, control=control or None)
        if kind == "oversize":
            return base.Message(index, "unknown", None, pos, control_id=control, raw=excerpt, error=ParseError(
                f"message is larger than the limit of {cfg.max_message_bytes} bytes (parser.max_message_bytes)",
                pos))
        charset = cfg.charset
        if charset is None:
            charset = cfg.default_charset
            if cfg.use_msh18 and len(head) > 17 and head[17]:
                declared = head[17].split(enc.repetition.encode("ascii"))[0].decode("ascii", errors="replace")
                declared = declared.strip().upper()
                if declared:
                    mapped = CHARSETS.get(declared)
                    if mapped is None:
                        return base.Message(index, "unknown", None, pos, control_id=control, raw=excerpt,
                                            error=ParseError(f"MSH-18 names an unknown character set {declared!r} "
                                                             "(HL7 table 0211); set parser.charset",
                                                             pos.with_(segment="MSH", segment_index=1,
                                                                       field="MSH-18")))
                    charset = mapped
        try:
            text = data.decode(charset, errors="strict" if cfg.decode_errors == "error" else "replace")
        except UnicodeDecodeError as exc:
            seg_no = data.count(b"\r", 0, exc.start)
            seg_id = segs[seg_no][:3].decode("ascii", errors="replace")
            ordinal = sum(1 for s in segs[: seg_no + 1] if s[:3] == segs[seg_no][:3])
            field_no = segs[seg_no][: exc.start - (sum(len(s) + 1 for s in segs[:seg_no]))].count(fsb)
            if seg_id == "MSH":
                field_no += 1
            return base.Message(index, "unknown", None, pos, control_id=control, raw=excerpt, error=ParseError(
                f"bytes not valid {charset} (0x{data[exc.start:exc.start + 1].hex()}); set parser.charset or "
                "check MSH-18", pos.with_(segment=seg_id, segment_index=ordinal, field=f"{seg_id}-{field_no}")))
        raw_segments = text.split("\r")
        fs = enc.field
        # every segment starts with an id and the declared field separator (cheap checks first)
        for raw in raw_segments:
            sid = raw[:3]
            if (len(raw) > 3 and raw[3] != fs) or not (len(sid) == 3 and sid.isalnum() and sid.isupper()
                                                         and sid.isascii()):
                return self._bad_segment(raw_segments, raw, fs, index, pos, control, excerpt)
        message = Message(raw_segments, enc, charset, pos)
        msh_seg = message.msh
        if len(msh_seg) < 12:
            missing = [f"MSH-{n}" for n in (9, 10, 12) if n > len(msh_seg) or not msh_seg.raw_value(n)]
            return base.Message(index, "unknown", None, pos, control_id=control, raw=excerpt, error=ParseError(
                f"MSH is truncated: it has {len(msh_seg)} fields, {', '.join(missing) or 'MSH-12'} missing",
                pos.with_(segment="MSH", segment_index=1, field=(missing or ["MSH-12"])[0])))
        mtype = message.type
        if not mtype:
            return base.Message(index, "unknown", None, pos, control_id=control, raw=excerpt, error=ParseError(
                "MSH-9 (message type) is empty", pos.with_(segment="MSH", segment_index=1, field="MSH-9")))
        env = base.Message(index, mtype, message, pos, control_id=msh_seg.value(10) or None,
                           sender=message.sender or None, raw=excerpt,
                           meta={"version": msh_seg.value(12), "charset": charset})
        if cfg.validate_ == "strict":
            env.error = validate_strict(message)
        return env

    @staticmethod
    def _bad_segment(raw_segments: list[str], bad: str, fs: str, index: int, pos: Position, control: str | None,
                     excerpt: bytes) -> base.Message:
        number = raw_segments.index(bad) + 1
        sid = bad[:3]
        known = bool(_SEGMENT_ID.match(sid))
        ordinal = sum(1 for r in raw_segments[:number] if r[:3] == sid) if known else None
        return base.Message(index, "unknown", None, pos, control_id=control, raw=excerpt, error=ParseError(
            f"segment {number} of the message does not start with a segment id followed by the field "
            f"separator {fs!r} declared in MSH-1: wrong field separator?",
            pos.with_(segment=sid if known else None, segment_index=ordinal)))


#: encoding characters by MSH prefix ("MSH|^~\\&|"): nearly every feed uses one or two
_ENCODINGS: dict[bytes, Encoding] = {}


def _envelope_count(seg: bytes) -> int | None:
    parts = seg.split(seg[3:4] or b"|")
    if len(parts) > 1 and parts[1].strip().isdigit():
        return int(parts[1])
    return None


def validate_strict(message: Message) -> ParseError | None:
    """Run hl7apy's structural validation (HL7 v2 message structures, STRICT level) on ``message``.

    hl7apy with ``find_groups=False`` rejects every structure that has groups
    (an FT1 is "not a valid child" of DFT_P03), and with ``find_groups=True`` it
    silently drops segments it cannot place (FIELD-NOTES). So groups are
    found, and the segments hl7apy kept are counted against the segments sent:
    a segment the structure has no place for is an error, never a silent drop.
    Returns the first problem as a ParseError, or None.
    """
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message as hl7apy_parse

    # Z-segments are site-defined: hl7apy reads their fields as plain ST and would reject
    # components, so they are kept by bridge but left out of the standard's structure check
    segments = [s for s in message.raw_segments if not s.startswith("Z")]
    text = "\r".join(segments) + "\r"
    try:
        parsed = hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
        kept = _count_segments(parsed)
    except HL7apyException as exc:
        # hl7apy's texts name structures and fields, not values
        return ParseError(f"structural validation (hl7apy, strict) failed: {type(exc).__name__}: "
                          f"{str(exc)[:300]}", message.position)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return ParseError(f"structural validation (hl7apy, strict) failed: {type(exc).__name__}",
                          message.position)
    if kept != len(segments):
        return ParseError(f"structural validation (hl7apy, strict) failed: {len(segments) - kept} segment(s) "
                          f"have no place in the {message.structure or message.type} structure (order or "
                          "unknown segment)", message.position)
    return None


def _count_segments(element: object) -> int:
    total = 0
    for child in getattr(element, "children", ()):
        total += 1 if getattr(child, "classname", "") == "Segment" else _count_segments(child)
    return total
