"""XML documents and XML feeds (cXML, catalog exports), parsed safely and streamed with lxml.

Two shapes of file:

- **one document per file** (``record_element`` unset): the whole file is one
  :class:`~parsers.base.Message` whose ``data`` is the root element. A cXML
  envelope (cXML 1.2, ``<cXML payloadID=... timestamp=...>``) is recognised:
  the message ``type`` is the name of the request or message inside it
  (``OrderRequest``, ``ConfirmationRequest``, ``ShipNoticeRequest``,
  ``InvoiceDetailRequest``, ``ProductActivityMessage``), ``control_id`` its
  ``payloadID`` and ``sender`` the ``Header/From`` identity. Such a document is
  held in memory, so its size is capped by ``max_document_bytes``;
- **a feed** (``record_element`` set): the file is streamed with
  ``lxml.etree.iterparse`` and every element with that tag (at any depth) is
  one message; each record is detached from the tree as it is yielded and its
  preceding siblings dropped, so memory stays bounded by the largest record,
  not the file. A feed of cXML envelopes (``record_element: cXML``) yields one
  message per envelope, typed as above.

``record_element`` is a local name (matches in any namespace), Clark notation
``{urn:x}Item``, or ``prefix:Item`` with the prefix in ``namespaces``.

Safety (OWASP XXE prevention cheat sheet; lxml ``XMLParser`` options): every
parse uses an explicit parser with ``resolve_entities=False``,
``no_network=True``, ``load_dtd=False``, ``dtd_validation=False`` and
``huge_tree=False``: no external entity (a local file or a URL) and no external
DTD is ever read, entities are never expanded (billion laughs), and
libxml2's size and depth limits stay on. A DOCTYPE that only names a DTD (as
every cXML document does, ``http://xml.cxml.org/schemas/cXML/...``) is
accepted and not fetched; a document that *declares* entities is refused
outright, since silently dropping their references would change its content.

Errors carry lxml's line and column. A syntax error ends a feed there
(records before it stay committed); a record that is well-formed but wrong
(for instance a cXML envelope without a request) is a per-message error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from lxml import etree
from pydantic import Field, field_validator

from bridge.errors import ConfigError, ParseError, Position
from parsers.base import Message, Parser, ParserConfig

__all__ = ["XmlParser", "XmlParserConfig", "cxml_envelope", "local_name", "safe_parser", "safe_parser_options"]

_EXCERPT = 2048
_COLUMN_SUFFIX = re.compile(r",\s*line \d+,\s*column \d+\s*$")

#: the options every XML parse in bridge uses; see the module docstring
safe_parser_options: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}


def safe_parser() -> etree.XMLParser:
    """A new lxml parser with bridge's safe options (parsers are not thread-safe: one per use)."""
    return etree.XMLParser(**safe_parser_options)


def local_name(tag: Any) -> str:
    """``{urn:x}Order`` -> ``Order``; comments and entities (non-str tags) -> ``""``."""
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


class XmlParserConfig(ParserConfig):
    #: element that is one record of a feed; unset: the whole file is one document
    record_element: str | None = None
    #: prefixes usable in ``record_element`` (``{po: "urn:acme:po"}``)
    namespaces: dict[str, str] = Field(default_factory=dict)
    #: accepted root element local names (``[cXML]``); empty accepts any root
    root: list[str] = Field(default_factory=list)
    #: largest single document held in memory (feeds are streamed and not capped)
    max_document_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    @field_validator("record_element")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("record_element is empty")
        return v


class _Capped:
    """A read-only stream wrapper that refuses to read past ``limit`` bytes."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(n if n is not None and n >= 0 else 1024 * 1024)
        self.count += len(chunk)
        if self.count > self.limit:
            raise _TooLarge
        return chunk


class _TooLarge(Exception):
    pass


def cxml_envelope(root: Any) -> tuple[str, str | None, str | None]:
    """For a ``<cXML>`` element: (document type, payloadID, From identity).

    cXML 1.2 User's Guide, "cXML envelope": ``cXML`` holds ``Header`` and one of
    ``Request``, ``Response`` or ``Message``; the document type is the element
    inside it (``Request/OrderRequest``), or ``Response`` itself.
    """
    doc_type = ""
    sender: str | None = None
    for child in root:
        name = local_name(child.tag)
        if name == "Header":
            ident = _child_path(child, ("From", "Credential", "Identity"))
            if ident is not None:
                sender = (ident.text or "").strip() or None
        elif name in ("Request", "Message"):
            for inner in child:
                inner_name = local_name(inner.tag)
                if inner_name:
                    doc_type = inner_name
                    break
        elif name == "Response":
            doc_type = "Response"
    return doc_type, root.get("payloadID"), sender


def _child_path(el: Any, names: tuple[str, ...]) -> Any:
    """The first element down ``names`` (local names, any namespace), or None.

    A child walk, not ``iterfind("{*}From/...")``: ElementPath costs more per call
    than the whole walk over a Header's few children (it runs once per document).
    """
    for name in names:
        el = next((c for c in el if local_name(c.tag) == name), None)
        if el is None:
            return None
    return el


def _syntax_error(exc: etree.XMLSyntaxError, name: str, index: int | None) -> ParseError:
    line, column = exc.position if exc.position else (exc.lineno, None)
    reason = _COLUMN_SUFFIX.sub("", str(exc.msg or exc)).strip()
    return ParseError(f"XML is not well-formed: {reason}", Position(file=name, message=index, line=line,
                                                                     column=column))


class XmlParser(Parser):
    """XML documents (one per file) or feeds (one message per record element), parsed safely."""

    Config = XmlParserConfig
    config: XmlParserConfig

    def __init__(self, config: XmlParserConfig | None = None) -> None:
        super().__init__(config)
        self.record_tag = self._resolve_tag(self.config.record_element) if self.config.record_element else None

    def _resolve_tag(self, tag: str) -> str:
        if tag.startswith("{"):
            return tag
        prefix, sep, local = tag.partition(":")
        if sep:
            uri = self.config.namespaces.get(prefix)
            if uri is None:
                raise ConfigError("parser.record_element", f"prefix {prefix!r} is not in parser.namespaces")
            return f"{{{uri}}}{local}"
        return "{*}" + tag

    def parse(self, stream: BinaryIO, *, name: str) -> Iterator[Message]:
        if self.record_tag is None:
            yield self._document(stream, name)
        else:
            yield from self._feed(stream, name)

    # -- checks shared by both shapes --------------------------------------

    def _check_root(self, root: Any, name: str) -> None:
        dtd = root.getroottree().docinfo.internalDTD
        if dtd is not None and any(True for _ in dtd.iterentities()):
            raise ParseError("the document declares entities (<!ENTITY> in its DOCTYPE); entity declarations "
                             "are refused (external entities, entity expansion)",
                             Position(file=name, line=1))
        allowed = self.config.root
        if allowed and local_name(root.tag) not in allowed:
            raise ParseError(f"root element is <{local_name(root.tag)}>, expected "
                             f"{' or '.join(f'<{r}>' for r in allowed)}",
                             Position(file=name, line=root.sourceline, field=local_name(root.tag)))

    def _message(self, index: int, elem: Any, name: str) -> Message:
        root = kind = local_name(elem.tag)
        control: str | None = None
        sender: str | None = None
        if kind == "cXML":
            kind, control, sender = cxml_envelope(elem)
        pos = Position(file=name, message=index, line=elem.sourceline, field=root, control=control or None)
        error: ParseError | None = None
        if not kind:
            kind = "cXML"
            error = ParseError("cXML envelope has no Request, Message or Response element", pos)
        return Message(index, kind, elem, pos, control_id=control, sender=sender, error=error, meta={"root": root})

    # -- one document -------------------------------------------------------

    def _document(self, stream: BinaryIO, name: str) -> Message:
        capped = _Capped(stream, self.config.max_document_bytes)
        try:
            tree = etree.parse(capped, safe_parser())
        except _TooLarge:
            raise ParseError(f"document is larger than parser.max_document_bytes ({self.config.max_document_bytes}"
                             " bytes); set parser.record_element to stream it as a feed",
                             Position(file=name)) from None
        except etree.XMLSyntaxError as exc:
            if capped.count == 0:
                raise ParseError("file is empty", Position(file=name, line=1)) from None
            raise _syntax_error(exc, name, None) from None
        root = tree.getroot()
        self._check_root(root, name)
        return self._message(0, root, name)

    # -- a feed --------------------------------------------------------------

    def _feed(self, stream: BinaryIO, name: str) -> Iterator[Message]:
        events = etree.iterparse(stream, events=("end",), tag=self.record_tag, **safe_parser_options)
        index = 0
        try:
            for _event, elem in events:
                if index == 0:
                    self._check_root(elem.getroottree().getroot(), name)
                parent = elem.getparent()
                if parent is not None:
                    # drop what came before this record (headers, earlier records' tails),
                    # then detach the record itself: it lives only as long as its message
                    while elem.getprevious() is not None:
                        del parent[0]
                    parent.remove(elem)
                yield self._message(index, elem, name)
                index += 1
        except etree.XMLSyntaxError as exc:
            if index == 0 and ("Document is empty" in str(exc.msg) or "no element found" in str(exc.msg)):
                raise ParseError("file is empty", Position(file=name, line=1)) from None
            raise _syntax_error(exc, name, index if index else None) from None
        if index == 0:
            if events.root is None:
                raise ParseError("file has no root element", Position(file=name, line=1))
            self._check_root(events.root, name)
            raise ParseError(f"feed has no <{self.config.record_element}> record elements", Position(file=name))
