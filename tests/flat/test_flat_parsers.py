"""The flat parsers on their own: header aliases, quoting, delimiters, encodings, fixed-width specs.

No database here: bytes in, ``Message``s out, positions checked line by line.
"""

from __future__ import annotations

import io

import pytest

from bridge.errors import ConfigError, ParseError
from mappings.flat_inventory_movement import InventoryMovementMapping
from mappings.flat_item import ItemMapping
from parsers.flat import CsvParser, CsvParserConfig, FixedWidthParser, FixedWidthParserConfig


def csv_parser(**cfg) -> CsvParser:
    p = CsvParser(CsvParserConfig(**cfg))
    p.bind(InventoryMovementMapping.columns)
    return p


def parse(parser, data: bytes, name: str = "f.csv"):
    return list(parser.parse(io.BytesIO(data), name=name))


def test_header_aliases_case_spaces_and_channel_aliases():
    data = (b"Date Time,ITEM_NO,Qty,UOM,Dept ID,Lot Number,Visit,Txn-Type,Cab No\n"
            b"2026-03-01 08:00:00,ITM1,2,EA,ICU,L1,ENC9,issue,C7\n")
    [m] = parse(csv_parser(aliases={"location": ["cab no"]}), data)
    assert m.error is None
    assert m.data == {"timestamp": "2026-03-01 08:00:00", "item": "ITM1", "quantity": "2", "unit": "EA",
                      "department": "ICU", "lot": "L1", "encounter": "ENC9", "transaction_type": "issue",
                      "location": "C7"}
    assert (m.index, m.position.line, m.position.file) == (0, 2, "f.csv")


def test_a_column_named_twice_is_refused():
    with pytest.raises(ParseError, match="header names column.s. item more than once"):
        parse(csv_parser(), b"timestamp,item,sku,quantity,unit,department,type\n")


def test_quoting_embedded_delimiters_quotes_and_line_breaks():
    data = (b'timestamp,item,quantity,unit,department,transaction_type,lot\n'
            b'2026-03-01 08:00:00,"ITM,1",1,EA,"ICU ""north""",issue,"L1\nsecond line"\n'
            b'2026-03-01 08:01:00,ITM2,1,EA,OR,issue,\n')
    first, second = parse(csv_parser(), data)
    assert first.data["item"] == "ITM,1"
    assert first.data["department"] == 'ICU "north"'
    assert first.data["lot"] == "L1\nsecond line"
    assert first.position.line == 2
    assert second.position.line == 4  # the quoted line break counts as a physical line


@pytest.mark.parametrize("delimiter", ["\t", "|", ";"])
def test_other_delimiters(delimiter):
    d = delimiter.encode()
    data = d.join([b"timestamp", b"item", b"qty", b"uom", b"dept", b"type"]) + b"\n" + \
        d.join([b"2026-03-01 08:00:00", b"ITM1", b"3", b"EA", b"ICU", b"waste"]) + b"\n"
    [m] = parse(csv_parser(delimiter=delimiter), data)
    assert m.error is None and m.data["quantity"] == "3" and m.data["transaction_type"] == "waste"


HEADER = "timestamp,item,quantity,unit,department,transaction_type,lot\n"


@pytest.mark.parametrize(("encoding", "data"), [
    ("utf-8", (HEADER + "2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,Lé\n").encode("utf-8")),
    ("utf-8-sig", b"\xef\xbb\xbf" + (HEADER + "2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,Lé\n").encode("utf-8")),
    ("utf-8-sig", (HEADER + "2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,Lé\n").encode("utf-8")),
    ("cp1252", (HEADER + "2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,Lé\n").encode("cp1252")),
])
def test_encodings(encoding, data):
    [m] = parse(csv_parser(encoding=encoding), data)
    assert m.error is None
    assert m.data["timestamp"] == "2026-03-01 08:00:00"  # a BOM never sticks to the first header
    assert m.data["lot"] == "Lé"


def test_bom_under_plain_utf8_is_not_silently_accepted():
    data = b"\xef\xbb\xbf" + HEADER.encode() + b"2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,\n"
    with pytest.raises(ParseError, match="missing required column.s.: timestamp"):
        parse(csv_parser(encoding="utf-8"), data)


def test_cp1252_bytes_under_utf8_fail_only_their_row():
    data = HEADER.encode() + "2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,Lé\n".encode("cp1252") + \
        b"2026-03-01 08:01:00,ITM2,1,EA,ICU,issue,\n"
    bad, good = parse(csv_parser(), data)
    assert isinstance(bad.error, ParseError)
    assert (bad.error.position.line, bad.error.position.column) == (2, 42)
    assert good.error is None and good.position.line == 3


def test_no_header_uses_the_configured_column_order():
    p = csv_parser(header=False, columns=["timestamp", "item", "quantity", "unit", "department",
                                          "transaction_type"])
    [m] = parse(p, b"2026-03-01 08:00:00,ITM1,1,EA,ICU,issue\n")
    assert m.data["item"] == "ITM1" and m.position.line == 1


def test_blank_lines_and_skip_lines():
    data = b"Cabinet export\nrun 2026-03-01\n" + HEADER.encode() + b"\n2026-03-01 08:00:00,ITM1,1,EA,ICU,issue,\n\n"
    [m] = parse(csv_parser(skip_lines=2), data)
    assert (m.index, m.position.line) == (0, 5)


FW_COLUMNS = [
    {"name": "timestamp", "start": 1, "width": 14},
    {"name": "item", "start": 15, "width": 8},
    {"name": "quantity", "start": 23, "width": 5},
    {"name": "unit", "start": 28, "width": 3},
    {"name": "department", "start": 31, "width": 6},
    {"name": "transaction_type", "start": 37, "width": 1},
    {"name": "lot", "start": 38, "width": 8, "required": False},
]


def fw_parser(**extra) -> FixedWidthParser:
    p = FixedWidthParser(FixedWidthParserConfig(columns=FW_COLUMNS, **extra))
    p.bind(InventoryMovementMapping.columns)
    return p


def test_fixed_width_with_column_spec_and_header_trailer_records():
    data = ("H20260301CABINETS\n"
            "20260301080000ITM1        2EA ICU   ILOT1    \n"
            "20260301080500ITM2        1EA OR    R\n"
            "T000002\n").encode("cp1252")
    first, second = parse(fw_parser(skip_prefixes=["H", "T"]), data, "cab.txt")
    assert first.data == {"timestamp": "20260301080000", "item": "ITM1", "quantity": "2", "unit": "EA",
                          "department": "ICU", "transaction_type": "I", "lot": "LOT1"}
    assert (first.position.line, second.position.line) == (2, 3)
    assert second.data["lot"] == ""


def test_fixed_width_short_line_names_the_column():
    [m] = parse(fw_parser(), b"20260301080000ITM1        2EA\n", "cab.txt")
    assert m.error is not None
    assert m.error.reason == "line is 29 characters; column 'unit' needs 30"
    assert m.error.position.field == "unit" and m.error.position.line == 1


def test_fixed_width_spec_must_cover_the_mapping():
    p = FixedWidthParser(FixedWidthParserConfig(columns=FW_COLUMNS[:2]))
    with pytest.raises(ConfigError, match="quantity, unit, department, transaction_type"):
        p.bind(InventoryMovementMapping.columns)


def test_item_master_header():
    p = CsvParser()
    p.bind(ItemMapping.columns)
    [m] = parse(p, b"Item No,Description,UOM,Mfr,MPN,UPC,Price\nITM1,Gauze 4x4,BX,Acme,G-44,0123,12.50\n")
    assert m.data == {"item": "ITM1", "description": "Gauze 4x4", "unit": "BX", "manufacturer": "Acme",
                      "manufacturer_part": "G-44", "gtin": "0123", "unit_price": "12.50"}
