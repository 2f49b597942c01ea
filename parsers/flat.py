"""Flat files: delimited (CSV, TSV, pipe) and fixed-width exports, streamed row by row.

Each data row is one :class:`~parsers.base.Message` whose ``data`` is a dict
from the mapping's column names to the raw (stripped) strings; the mapping
converts types. Positions carry the physical line (1-based, counting the
header) and the column name, so an operator can open the file at that line.

Bytes are decoded line by line, so an undecodable byte fails that row only,
with the line and byte offset, and the rest of the file goes on. Header names
are matched to columns case-insensitively, ignoring spaces, ``_`` and ``-``,
through each column's aliases plus the channel's ``aliases``.

Errors for the whole file (raised): empty file, no header, missing required
columns (with a hint when the header looks split by another delimiter),
unknown columns unless ``unknown_columns: ignore``.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from typing import BinaryIO, Literal

from pydantic import Field, field_validator

from bridge.errors import ParseError, Position
from parsers.base import Column, Message, Parser, ParserConfig

__all__ = ["CsvParser", "CsvParserConfig", "FixedWidthParser", "FixedWidthParserConfig"]

Encoding = Literal["utf-8", "utf-8-sig", "cp1252", "latin-1", "ascii"]

# a cell may be at most this long: a wrong quotechar must not swallow a 200 MB file into one field
csv.field_size_limit(1024 * 1024)
_MAX_EXCERPT = 512
#: longest physical line read at once; longer lines fail (bounded memory on any input)
_MAX_LINE = 4 * 1024 * 1024


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name.strip().lower())


class CsvParserConfig(ParserConfig):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quotechar: str = Field('"', min_length=1, max_length=1)
    encoding: Encoding = "utf-8-sig"
    #: False: the file has no header row; ``columns`` gives the column order
    header: bool = True
    columns: list[str] = Field(default_factory=list)
    #: extra header names per column: ``{item: [ITEM_NO, "Item #"]}``
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    unknown_columns: Literal["error", "ignore"] = "error"
    #: lines to skip before the header (report titles some exports put on top)
    skip_lines: int = Field(0, ge=0)

    @field_validator("delimiter")
    @classmethod
    def _delim(cls, v: str) -> str:
        if v in ("\r", "\n"):
            raise ValueError("delimiter cannot be a line break")
        return v


class _Lines:
    """Decode a binary stream line by line, remembering which lines failed to decode."""

    def __init__(self, stream: BinaryIO, encoding: str, name: str) -> None:
        self.stream = stream
        self.encoding = encoding
        self.name = name
        self.line = 0
        self.bad: dict[int, ParseError] = {}

    def __iter__(self) -> Iterator[str]:
        decode = codecs.getdecoder(self.encoding)
        first = True
        readline = self.stream.readline
        while raw := readline(_MAX_LINE + 1):
            self.line += 1
            if len(raw) > _MAX_LINE and not raw.endswith(b"\n"):
                # a line longer than any real record (no line breaks, a binary file): skip to the
                # next line break in bounded reads instead of holding a 200 MB "line" in memory
                while (more := readline(_MAX_LINE)) and not more.endswith(b"\n"):
                    pass
                self.bad[self.line] = ParseError(
                    f"line is longer than {_MAX_LINE} bytes; is this a flat file with line breaks?",
                    Position(file=self.name, line=self.line))
                yield "?\n"  # a one-field stand-in, so the row reaches the error check
                continue
            if first and self.encoding == "utf-8-sig":
                raw = raw.removeprefix(codecs.BOM_UTF8)
                first = False
            try:
                text = decode(raw)[0]
            except UnicodeDecodeError as exc:
                self.bad[self.line] = ParseError(
                    f"bytes not valid {self.encoding} at byte {exc.start + 1} of the line "
                    f"(0x{raw[exc.start:exc.start + 1].hex()}); check the channel's parser.encoding",
                    Position(file=self.name, line=self.line, column=exc.start + 1),
                )
                text = raw.decode(self.encoding, errors="replace")
            yield text


class CsvParser(Parser):
    """Delimited text (CSV, TSV, pipe) with a header row, streamed one row per message."""

    Config = CsvParserConfig
    config: CsvParserConfig

    def __init__(self, config: CsvParserConfig | None = None) -> None:
        super().__init__(config)
        self.columns: list[Column] = []

    def bind(self, columns: list[Column] | None) -> None:
        self.columns = list(columns or [])

    def _resolve_header(self, header: list[str], name: str, line: int) -> list[str | None]:
        lookup: dict[str, str] = {}
        for col in self.columns:
            for alias in (col.name, *col.aliases, *self.config.aliases.get(col.name, ())):
                lookup[_norm(alias)] = col.name
        for canon, aliases in self.config.aliases.items():
            for alias in (canon, *aliases):
                lookup.setdefault(_norm(alias), canon)
        if not self.columns and not self.config.aliases:
            return [h.strip() for h in header]
        resolved: list[str | None] = []
        unknown: list[str] = []
        for h in header:
            hit = lookup.get(_norm(h))
            if hit is None:
                if h.strip():
                    unknown.append(h.strip())
                resolved.append(None)
            else:
                resolved.append(hit)
        seen = [r for r in resolved if r]
        dupes = sorted({r for r in seen if seen.count(r) > 1})
        if dupes:
            raise ParseError(f"header names column(s) {', '.join(dupes)} more than once",
                             Position(file=name, line=line))
        missing = [c.name for c in self.columns if c.required and c.name not in seen]
        if missing:
            hint = ""
            if len(header) == 1:
                for cand in (";", "\t", "|", ","):
                    if cand != self.config.delimiter and cand in header[0]:
                        hint = f"; the header has one column and contains {cand!r}: is parser.delimiter wrong?"
                        break
            raise ParseError(f"missing required column(s): {', '.join(missing)}{hint}",
                             Position(file=name, line=line, field=missing[0]))
        if unknown and self.config.unknown_columns == "error":
            raise ParseError(f"unknown column(s): {', '.join(unknown)} (add parser.aliases, or set "
                             "parser.unknown_columns: ignore)", Position(file=name, line=line, field=unknown[0]))
        return resolved

    def parse(self, stream: BinaryIO, *, name: str) -> Iterator[Message]:
        cfg = self.config
        lines = _Lines(stream, cfg.encoding, name)
        line_iter = iter(lines)
        for _ in range(cfg.skip_lines):
            if next(line_iter, None) is None:
                break
        reader = csv.reader(line_iter, delimiter=cfg.delimiter, quotechar=cfg.quotechar, strict=True)
        header_line = 0
        if cfg.header:
            try:
                header = next(reader, None)
                while header is not None and not any(h.strip() for h in header):
                    header = next(reader, None)
            except csv.Error as exc:
                raise ParseError(f"header cannot be read: {exc}", Position(file=name, line=lines.line)) from None
            if header is None:
                raise ParseError("file is empty" if lines.line == 0 else "file has no header row",
                                 Position(file=name, line=max(lines.line, 1)))
            header_line = lines.line
            if header_line in lines.bad:
                raise lines.bad[header_line]
            names = self._resolve_header(header, name, header_line)
        else:
            names = list(cfg.columns) or [c.name for c in self.columns]
            if not names:
                raise ParseError("parser.header is false but no parser.columns are given", Position(file=name))
        width = len(names)
        index = 0
        start = lines.line + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # strict mode: a stray quote; the reader resynchronises on the next line
                yield Message(index, "row", {}, Position(file=name, message=index, line=start),
                              error=ParseError(f"malformed CSV: {exc}", Position(file=name, message=index,
                                                                                 line=start)))
                index += 1
                start = lines.line + 1
                continue
            end = lines.line
            pos = Position(file=name, message=index, line=start)
            if not row or (len(row) == 1 and not row[0].strip()):
                start = end + 1
                continue
            error: ParseError | None = None
            for ln in range(start, end + 1):
                if ln in lines.bad:
                    error = lines.bad.pop(ln)
                    error = ParseError(error.reason, pos.with_(line=ln, column=error.position.column))
                    break
            if error is None and len(row) != width:
                error = ParseError(f"row has {len(row)} fields, the header has {width}", pos)
            if error is not None:
                yield Message(index, "row", {}, pos, error=error,
                              raw=cfg.delimiter.join(row).encode()[:_MAX_EXCERPT])
            else:
                data = {n: v.strip() for n, v in zip(names, row, strict=True) if n is not None}
                yield Message(index, "row", data, pos)
            index += 1
            start = end + 1
        if index == 0 and cfg.header and header_line:
            raise ParseError("file has a header but no data rows", Position(file=name, line=header_line))


class FixedWidthColumn(ParserConfig):
    name: str
    #: 1-based first character, as in most interface specs
    start: int = Field(ge=1)
    width: int = Field(ge=1)
    required: bool = True


class FixedWidthParserConfig(ParserConfig):
    columns: list[FixedWidthColumn] = Field(min_length=1)
    encoding: Encoding = "cp1252"
    skip_lines: int = Field(0, ge=0)
    #: record-type prefixes to skip (header "H", trailer "T" records)
    skip_prefixes: list[str] = Field(default_factory=list)
    #: only lines starting with this prefix are data records (if set)
    record_prefix: str | None = None


class FixedWidthParser(Parser):
    """Fixed-width records, one per line, cut by the column spec in the channel config."""

    Config = FixedWidthParserConfig
    config: FixedWidthParserConfig

    def bind(self, columns: list[Column] | None) -> None:
        if not columns:
            return
        have = {c.name for c in self.config.columns}
        missing = [c.name for c in columns if c.required and c.name not in have]
        if missing:
            from bridge.errors import ConfigError

            raise ConfigError("parser.columns", f"the mapping needs column(s) {', '.join(missing)}")

    def parse(self, stream: BinaryIO, *, name: str) -> Iterator[Message]:
        cfg = self.config
        lines = _Lines(stream, cfg.encoding, name)
        # optional columns may be missing at the end of a line (their value is then empty)
        min_len = max((c.start - 1 + c.width for c in cfg.columns if c.required), default=0)
        index = 0
        seen_any = False
        for text in lines:
            seen_any = True
            ln = lines.line
            if ln <= cfg.skip_lines:
                continue
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            if cfg.record_prefix is not None and not text.startswith(cfg.record_prefix):
                continue
            if any(text.startswith(p) for p in cfg.skip_prefixes):
                continue
            pos = Position(file=name, message=index, line=ln)
            if ln in lines.bad:
                err = lines.bad.pop(ln)
                yield Message(index, "record", {}, pos, error=ParseError(err.reason, pos.with_(
                    column=err.position.column)))
            elif len(text) < min_len:
                short = next(c for c in cfg.columns if c.required and c.start - 1 + c.width > len(text))
                yield Message(index, "record", {}, pos, raw=text.encode()[:_MAX_EXCERPT], error=ParseError(
                    f"line is {len(text)} characters; column {short.name!r} needs "
                    f"{short.start - 1 + short.width}", pos.with_(field=short.name)))
            else:
                data = {c.name: text[c.start - 1 : c.start - 1 + c.width].strip() for c in cfg.columns}
                yield Message(index, "record", data, pos)
            index += 1
        if not seen_any:
            raise ParseError("file is empty", Position(file=name, line=1))
        if index == 0:
            raise ParseError("file has no data records", Position(file=name))
