"""The X12 tokenizer: bytes -> segments (lists of element strings), streamed in chunks.

It owns the delimiters and nothing else (envelopes, counts and meaning are
:mod:`parsers.x12.parser`'s). Per X12.5 / X12.6 (the interchange control
structure), every interchange declares its own delimiters in its fixed-length
106-character ISA segment:

- the element separator is the 4th character (right after ``ISA``);
- the repetition separator is ISA11 (5010, version 00501 and later; in 4010
  ISA11 is the standards identifier ``U``);
- the component separator is ISA16 (the 105th character);
- the segment terminator is the 106th character.

CR/LF after a terminator are tolerated (they are "suffixes", not data). A file
may hold several interchanges, each with its own delimiters: after an IEA the
tokenizer reads the next ISA afresh. Memory is one chunk plus one partial
segment, whatever the file size.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bridge.errors import ParseError, Position

__all__ = ["CHUNK_SIZE", "ISA_LENGTH", "Delimiters", "IsaError", "Tokenizer", "read_isa"]

ISA_LENGTH = 106
#: ISA element widths ISA01..ISA16 (X12.5 interchange control header, fixed length)
ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
#: 64 KiB: a chunk, its decoded text and its segments stay in the CPU caches; measured on an
#: 837P, tokenizing with 64 KiB chunks takes about 20% less CPU than with 1 MiB ones
CHUNK_SIZE = 1 << 16
_WS = "\r\n"


@dataclass(frozen=True, slots=True)
class Delimiters:
    element: str = "*"
    component: str = ":"
    repetition: str | None = "^"
    segment: str = "~"

    def usable(self) -> bool:
        """Whether a document can be written with these: four different single characters, none a letter, digit
        or space (X12.5: a delimiter must not occur in data)."""
        chars = (self.element, self.component, self.repetition, self.segment)
        return len(set(chars)) == 4 and not any(c is None or len(c) != 1 or c.isalnum() or c.isspace() for c in chars)


class IsaError(ParseError):
    """The ISA cannot be read. ``note`` is the TA1 note code (X12 TA105) that fits;
    ``elements`` holds what could be read, so a TA1 can still be addressed."""

    def __init__(self, reason: str, position: Position | None = None, *, note: str = "022",
                 elements: list[str] | None = None, delimiters: Delimiters | None = None,
                 length: int | None = None) -> None:
        super().__init__(reason, position)
        self.note = note
        self.elements = elements
        self.delimiters = delimiters
        self.length = length


def read_isa(text: str, *, name: str | None = None) -> tuple[list[str], Delimiters, int]:
    """Read the ISA at the start of ``text``; return (elements ISA00..ISA16, delimiters, length).

    Raises :class:`IsaError` when the ISA is not exactly 106 characters or its
    delimiters clash; the error carries the elements when they can be read
    leniently (an ISA shorter than 106 because ISA06 was not padded, say), so
    the interchange can still get a TA1 rejection.
    """
    pos = Position(file=name, segment="ISA", segment_index=1)
    if not text.startswith("ISA") or len(text) < 4:
        raise IsaError("interchange does not start with an ISA segment", pos)
    sep = text[3]
    # lenient scan: 16 separators, then ISA16, then the terminator
    idx = 3
    for _ in range(15):
        idx = text.find(sep, idx + 1)
        if idx < 0 or idx > 200:
            raise IsaError("ISA has fewer than 16 elements", pos, note="022")
    # idx: the separator before ISA16
    if idx + 2 >= len(text):
        raise IsaError(f"ISA is {idx + 2} characters, it must be {ISA_LENGTH}", pos.with_(field="ISA16"), note="022")
    component = text[idx + 1]
    terminator = text[idx + 2]
    length = idx + 3
    elements = text[: idx + 2].split(sep)
    repetition = elements[11] if len(elements) > 11 and elements[12][:3] >= "005" else None
    delims = Delimiters(sep, component, repetition, terminator)
    if length != ISA_LENGTH:
        raise IsaError(f"ISA is {length} characters, it must be exactly {ISA_LENGTH} (fixed-width elements "
                       "ISA01-ISA16, ISA06/ISA08 padded to 15)", pos, note="022", elements=elements,
                       delimiters=delims, length=length)
    chars = [("element separator", sep, "026"), ("component separator", component, "027"),
             ("segment terminator", terminator, "004")]
    if repetition is not None:
        chars.append(("repetition separator", repetition, "022"))
    seen: dict[str, str] = {}
    for label, ch, note in chars:
        if ch.isalnum() or ch == " ":
            raise IsaError(f"the {label} {ch!r} is a letter, digit or space; it clashes with data", pos,
                           note=note, elements=elements, delimiters=delims, length=length)
        if ch in seen:
            raise IsaError(f"the {label} and the {seen[ch]} are the same character {ch!r}", pos,
                           note=note, elements=elements, delimiters=delims, length=length)
        seen[ch] = label
    for i, width in enumerate(ISA_WIDTHS, start=1):
        if len(elements[i]) != width:
            raise IsaError(f"ISA{i:02d} is {len(elements[i])} characters, it must be {width}",
                           pos.with_(field=f"ISA{i:02d}"), note="022", elements=elements, delimiters=delims, length=length)
    return elements, delims, length


class Tokenizer:
    """Yields segments as ``list[str]`` (element 0 is the segment id), interchange by interchange.

    ``delimiters`` is the current interchange's; ``on_isa`` is never needed: an
    ISA segment is yielded like any other, right after its delimiters are set.
    ``offset`` counts the characters consumed, for positions in errors.
    """

    def __init__(self, stream: BinaryIO, *, name: str | None = None, chunk_size: int = CHUNK_SIZE,
                 encoding: str = "utf-8") -> None:
        self.stream = stream
        self.name = name
        self.chunk_size = chunk_size
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.delimiters = Delimiters()
        self.interchanges = 0
        self.isa_error: IsaError | None = None
        self._eof = False

    def _read(self) -> str:
        if self._eof:
            return ""
        data = self.stream.read(self.chunk_size)
        if not data:
            self._eof = True
            return self._decoder.decode(b"", final=True)
        return self._decoder.decode(data)

    def __iter__(self) -> Iterator[list[str]]:
        """Segments as element lists (convenient; the parser uses :meth:`batches`)."""
        for batch in self.batches():
            sep = self.delimiters.element
            for seg in batch:
                yield seg.split(sep)

    def batches(self) -> Iterator[list[str]]:
        """Segment texts (without terminator) in lists, one per chunk read; the ISA alone in its own.

        Segments stay strings until someone needs their elements: a string is not
        tracked by the garbage collector, a list per segment is, and keeping a
        5,000-claim set as lists costs more in collections than the split itself.
        Read :attr:`delimiters` after each batch for the current interchange's.

        CR/LF are dropped from a chunk's text with ``str.replace`` (they are not in the X12 basic
        or extended character sets, so they can only be line-break suffixes), unless one of them
        is the terminator itself. Empty segments (``~~``) are skipped.
        """
        buf = ""
        while True:
            # find the next ISA (skipping line breaks and padding between interchanges)
            while True:
                buf = buf.lstrip(" \t\r\n\x00\ufeff")
                if len(buf) >= 256 or self._eof:
                    break
                more = self._read()
                if not more and self._eof:
                    buf = buf.lstrip(" \t\r\n\x00\ufeff")
                    break
                buf += more
            if not buf:
                return
            self.interchanges += 1
            # an ISA read leniently (wrong length, clashing delimiters) is kept as ``isa_error``
            # so the parser can reject the interchange with a TA1 and go on to the next one;
            # an unreadable ISA raises: nothing after it can be trusted
            self.isa_error = None
            try:
                _elements, delims, length = read_isa(buf, name=self.name)
            except IsaError as exc:
                if exc.elements is None or exc.delimiters is None or exc.length is None:
                    raise
                self.isa_error = exc
                delims, length = exc.delimiters, exc.length
            self.delimiters = delims
            yield [buf[: length - 1]]
            buf = buf[length:]
            term, sep = delims.segment, delims.element
            drop = [c for c in "\r\n" if c != term]
            iea = "IEA" + sep
            while True:
                start = _find_iea(buf, iea, term)
                if start >= 0:
                    end = buf.find(term, start)
                    if end < 0 and not self._eof:
                        buf += self._read()
                        continue
                    if end < 0:
                        end = len(buf)
                    body, buf = buf[:end], buf[end + 1 :]
                    yield self._split(body, term, sep, drop)
                    break
                cut = buf.rfind(term)
                if cut >= 0:
                    body, buf = buf[:cut], buf[cut + 1 :]
                    batch = self._split(body, term, sep, drop)
                    if batch:
                        yield batch
                more = self._read()
                if more:
                    buf += more
                    continue
                tail = buf.strip(_WS)
                if tail:
                    # the last segment has no terminator: give it to the parser to judge
                    yield [tail]
                return

    @staticmethod
    def _split(body: str, term: str, sep: str, drop: list[str]) -> list[str]:
        for c in drop:
            if c in body:
                body = body.replace(c, "")
        parts = body.split(term)
        if "" in parts:
            parts = [p for p in parts if p]
        return parts


def _find_iea(buf: str, iea: str, term: str) -> int:
    """Where the IEA segment starts in ``buf``: ``IEA`` + separator at the start or right
    after a terminator (line breaks between them allowed); -1 if there is none yet.

    One scan for ``IEA*``; a hit elsewhere (an element value ending in ``IEA``) is passed over.
    """
    k = buf.find(iea)
    while k >= 0:
        j = k
        while j > 0 and buf[j - 1] in _WS and buf[j - 1] != term:
            j -= 1
        if j == 0 or buf[j - 1] == term:
            return k
        k = buf.find(iea, k + 1)
    return -1
