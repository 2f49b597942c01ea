"""Declarative XML mapping: field -> XPath 1.0 expression, configured in YAML, no code.

For an XML feed nobody wrote a mapping for (a legacy system's export, a
catalog feed), the channel names the canonical record type and, per field,
the XPath that reads it, relative to the record element::

    parser:  {type: xml, record_element: "cat:Product", namespaces: {cat: "urn:acme:catalog"}}
    mapping:
      type: xml_xpath
      record_type: item
      namespaces: {cat: "urn:acme:catalog"}
      fields:
        item_code: "cat:Sku"
        description: "cat:Name"
        unit: {xpath: "cat:Uom", default: "EA"}
        unit_price: {xpath: "cat:Price", type: decimal}
        vendor: {xpath: "@supplier", crosswalk: vendor}

A field is an XPath string (its string value, stripped, is the field's text)
or a block with ``type`` (str, decimal, int, date, datetime, bool, list),
``required``, ``default`` and ``crosswalk`` (a crosswalk kind the value goes
through, a missing entry being a master-data failure). A list of nested
models (order lines) is a block with ``each`` (the XPath selecting the
elements) and its own ``fields``. ``records`` selects several records inside
one message (default: the message element itself is the record).
``source_channel`` is filled in when the model has it.

Expressions are compiled when the channel is configured, so a bad XPath
stops start-up naming the field. The record is validated by the canonical
model; an error names the field, never the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from bridge.errors import MappingError, Position
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import CanonicalRecord, record_class
from parsers.base import Message

__all__ = ["XPathField", "XPathMapping", "XPathMappingConfig"]

FieldType = Literal["str", "decimal", "int", "date", "datetime", "bool", "list"]
_TRUE = {"true", "1", "y", "yes"}
_FALSE = {"false", "0", "n", "no"}


class XPathField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    xpath: str | None = None
    type: FieldType = "str"
    required: bool = False
    default: Any = None
    crosswalk: str | None = None
    #: for a list of nested models: the XPath selecting one element per item, and their fields
    each: str | None = None
    fields: dict[str, XPathField | str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> XPathField:
        if self.each is None and self.xpath is None and self.default is None:
            raise ValueError("a field needs xpath, each, or a default")
        if self.each is not None and not self.fields:
            raise ValueError("each needs fields")
        return self


def _as_field(value: XPathField | str) -> XPathField:
    return value if isinstance(value, XPathField) else XPathField(xpath=value)


class _Compiled:
    __slots__ = ("crosswalk", "default", "each", "fields", "name", "required", "type", "xpath")

    def __init__(self, name: str, spec: XPathField, ns: dict[str, str]) -> None:
        self.name = name
        self.type = spec.type
        self.required = spec.required
        self.default = spec.default
        self.crosswalk = spec.crosswalk
        try:
            self.xpath = etree.XPath(spec.xpath, namespaces=ns) if spec.xpath else None
            self.each = etree.XPath(spec.each, namespaces=ns) if spec.each else None
        except etree.XPathSyntaxError as exc:
            raise ValueError(f"field {name}: XPath does not compile: {exc}") from None
        self.fields = [_Compiled(f"{name}.{k}", _as_field(v), ns) for k, v in spec.fields.items()]


class XPathMappingConfig(MappingConfig):
    record_type: str
    namespaces: dict[str, str] = Field(default_factory=dict)
    #: XPath selecting several records inside one message; default: the message element
    records: str | None = None
    fields: dict[str, XPathField | str] = Field(min_length=1)
    #: zone for date-times without an offset
    timezone: str = "UTC"

    _model: type[CanonicalRecord] = PrivateAttr()
    _compiled: list[_Compiled] = PrivateAttr()
    _records: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> XPathMappingConfig:
        model = record_class(self.record_type)
        if model is None:
            raise ValueError(f"record_type {self.record_type!r} is not a canonical record type")
        self._model = model
        unknown = sorted(set(self.fields) - set(model.model_fields))
        if unknown:
            raise ValueError(f"fields {', '.join(unknown)} are not fields of {self.record_type}")
        self._compiled = [_Compiled(k, _as_field(v), self.namespaces) for k, v in self.fields.items()]
        if self.records:
            try:
                self._records = etree.XPath(self.records, namespaces=self.namespaces)
            except etree.XPathSyntaxError as exc:
                raise ValueError(f"records: XPath does not compile: {exc}") from None
        return self


def _string(value: Any) -> str | None:
    """XPath result -> text: a node set gives its first node's string value."""
    if isinstance(value, list):
        if not value:
            return None
        value = value[0]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return None if value != value else (str(int(value)) if value.is_integer() else str(value))
    if isinstance(value, str):
        text = str(value)
    elif hasattr(value, "itertext"):
        text = "".join(value.itertext())
    else:
        text = str(value)
    text = text.strip()
    return text or None


class XPathMapping(Mapping):
    """Any XML record to a canonical record, by a field -> XPath table in the channel config."""

    Config = XPathMappingConfig
    config: XPathMappingConfig

    def __init__(self, config: XPathMappingConfig | None = None) -> None:
        super().__init__(config)
        self.model = self.config._model
        self.records = self.config._records
        self.fields = self.config._compiled

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        root = message.data
        elements = self.records(root) if self.records is not None else [root]
        out: list[Output] = []
        for el in elements:
            pos = message.position.with_(line=getattr(el, "sourceline", None) or message.position.line)
            data = self._record(el, self.fields, ctx, pos)
            if "source_channel" in self.model.model_fields and "source_channel" not in data:
                data["source_channel"] = ctx.channel
            out.append(self._validate(self.model, data, pos))
        return out

    def _validate(self, model: type[BaseModel], data: dict[str, Any], pos: Position) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise MappingError(f"{self.config.record_type} field {loc}: {first['msg']}",
                               pos.with_(field=loc)) from None

    def _record(self, el: Any, fields: list[_Compiled], ctx: MappingContext, pos: Position) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields:
            short = f.name.rpartition(".")[2]
            if f.each is not None:
                data[short] = [self._record(sub, f.fields, ctx, pos.with_(line=sub.sourceline or pos.line))
                               for sub in f.each(el)]
                continue
            try:
                raw = f.xpath(el) if f.xpath is not None else None
            except etree.XPathEvalError as exc:
                raise MappingError(f"field {f.name}: XPath failed: {exc}", pos.with_(field=f.name)) from None
            if f.type == "list":
                items = raw if isinstance(raw, list) else [raw]
                data[short] = [t for t in (_string(i) for i in items) if t is not None]
                continue
            text = _string(raw)
            if text is None:
                if f.required:
                    raise MappingError(f"field {f.name} is missing", pos.with_(field=f.name))
                if f.default is not None:
                    data[short] = f.default
                continue
            if f.crosswalk:
                text = ctx.crosswalks.lookup(f.crosswalk, text, position=pos, field=f.name)
            data[short] = self._convert(f, text, pos)
        return data

    def _convert(self, f: _Compiled, text: str, pos: Position) -> Any:
        where = pos.with_(field=f.name)
        try:
            if f.type == "str":
                return text
            if f.type == "decimal":
                number = Decimal(text.replace(",", ""))
                if not number.is_finite():
                    raise InvalidOperation
                return number
            if f.type == "int":
                return int(text)
            if f.type == "date":
                return date.fromisoformat(text[:10])
            if f.type == "datetime":
                value = datetime.fromisoformat(text)
                if value.tzinfo is None:
                    from mappings.convert import zone

                    value = value.replace(tzinfo=zone(self.config.timezone))
                return value.astimezone(UTC)
            if f.type == "bool":
                low = text.lower()
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE
                raise ValueError
        except (InvalidOperation, ValueError):
            raise MappingError(f"field {f.name} is not a valid {f.type}", where) from None
        return text
