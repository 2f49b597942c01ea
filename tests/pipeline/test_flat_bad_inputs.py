"""Every bad flat input named in issue 2, through land + Processor, on SQLite and PostgreSQL.

Each test asserts what an operator sees: the stored failure (category, reason,
position: file, line, column or field) in ``failures`` and the inbound file's
status, and that the good rows of the same file committed.
"""

from __future__ import annotations

from bridge.db.tables import events, records
from tests.pipeline.flatkit import (
    CONSUMPTION_HEADER,
    channel,
    consumption,
    count,
    failure_rows,
    inbound,
    ingest,
    record_data,
    seed,
)

GOOD = "2026-03-01 08:00:00,ITM1,2,ea,ICU,L1,,issue"
GOOD2 = "2026-03-01 08:05:00,ITM2,1,EA,OR,,ENC1,return"


def header_with(extra: str) -> str:
    return CONSUMPTION_HEADER.rstrip("\n") + "," + extra + "\n"


def only_failure(db, inbound_id):
    rows = failure_rows(db, inbound_id)
    assert len(rows) == 1, rows
    return rows[0]


def test_empty_file(db, archive):
    landed, result = ingest(db, archive, b"", name="empty.csv")
    assert result.status == "failed"
    f = only_failure(db, landed.inbound_id)
    assert (f["category"], f["message_index"]) == ("parse", -1)
    assert f["reason"] == "file is empty"
    assert f["position"] == {"file": "empty.csv", "line": 1}
    assert inbound(db, landed.inbound_id).status == "failed"
    assert count(db, records) == 0


def test_header_only(db, archive):
    landed, result = ingest(db, archive, consumption(), name="header.csv")
    assert result.status == "failed"
    f = only_failure(db, landed.inbound_id)
    assert f["category"] == "parse"
    assert f["reason"] == "file has a header but no data rows"
    assert f["position"] == {"file": "header.csv", "line": 1}


def test_missing_required_column(db, archive):
    data = b"timestamp,item,unit,department,transaction_type\n2026-03-01 08:00:00,ITM1,EA,ICU,issue\n"
    landed, result = ingest(db, archive, data, name="noqty.csv")
    assert result.status == "failed"
    f = only_failure(db, landed.inbound_id)
    assert f["category"] == "parse"
    assert f["reason"] == "missing required column(s): quantity"
    assert f["position"] == {"file": "noqty.csv", "line": 1, "field": "quantity"}
    assert inbound(db, landed.inbound_id).error == "missing required column(s): quantity"


def test_unknown_column(db, archive):
    seed(db)
    data = consumption(GOOD + ",blue", header=header_with("Colour"))
    landed, result = ingest(db, archive, data, name="extra.csv")
    assert result.status == "failed"
    f = only_failure(db, landed.inbound_id)
    assert f["category"] == "parse"
    assert f["reason"].startswith("unknown column(s): Colour")
    assert "parser.unknown_columns: ignore" in f["reason"]
    assert f["position"] == {"file": "extra.csv", "line": 1, "field": "Colour"}


def test_unknown_column_ignored_when_configured(db, archive):
    seed(db)
    data = consumption(GOOD + ",blue", header=header_with("Colour"))
    ch = channel(parser={"type": "csv", "unknown_columns": "ignore"})
    landed, result = ingest(db, archive, data, ch=ch)
    assert result.status == "processed"
    assert [r["item"] for r in record_data(db)] == ["ERP-1"]


def test_wrong_delimiter_hints_at_the_delimiter(db, archive):
    data = consumption(GOOD.replace(",", ";"), header=CONSUMPTION_HEADER.replace(",", ";"))
    landed, result = ingest(db, archive, data, name="semi.csv")
    assert result.status == "failed"
    f = only_failure(db, landed.inbound_id)
    assert f["category"] == "parse"
    assert f["reason"].startswith("missing required column(s): timestamp, item, quantity")
    assert "contains ';': is parser.delimiter wrong?" in f["reason"]
    assert f["position"]["line"] == 1


def test_undecodable_bytes_fail_that_row_only(db, archive):
    seed(db)
    bad = "2026-03-01 08:01:00,ITM1,1,EA,ICU,L\xe9,,issue".encode("cp1252")
    data = consumption(GOOD) + bad + b"\n" + GOOD2.encode() + b"\n"
    landed, result = ingest(db, archive, data, name="latin.csv")
    assert result.status == "partial"
    f = only_failure(db, landed.inbound_id)
    assert f["category"] == "parse"
    assert f["message_index"] == 1
    assert "not valid utf-8-sig at byte 36" in f["reason"] and "0xe9" in f["reason"]
    assert f["position"] == {"file": "latin.csv", "message": 1, "line": 3, "column": 36}
    assert [r["source_item"] for r in record_data(db)] == ["ITM1", "ITM2"]
    row = inbound(db, landed.inbound_id)
    assert (row.status, row.failure_count, row.record_count, row.message_count) == ("partial", 1, 2, 3)


def test_bad_number_and_bad_date(db, archive):
    seed(db)
    data = consumption(
        GOOD,
        "2026-03-01 08:01:00,ITM1,two,EA,ICU,,,issue",
        "yesterday,ITM1,1,EA,ICU,,,issue",
        "2026-02-30 08:00:00,ITM1,1,EA,ICU,,,issue",
    )
    landed, result = ingest(db, archive, data, name="types.csv")
    assert result.status == "partial"
    rows = failure_rows(db, landed.inbound_id)
    assert [(f["message_index"], f["category"], f["position"]["line"], f["position"]["field"]) for f in rows] == [
        (1, "mapping", 3, "quantity"), (2, "mapping", 4, "timestamp"), (3, "mapping", 5, "timestamp")]
    assert rows[0]["reason"] == "quantity is not a number"
    assert rows[1]["reason"].startswith("timestamp is not a date-time in a known format")
    assert count(db, records) == 1
    assert count(db, events) == 1


def test_negative_quantity_on_an_issue(db, archive):
    seed(db)
    data = consumption("2026-03-01 08:00:00,ITM1,-3,EA,ICU,,,issue", GOOD2)
    landed, result = ingest(db, archive, data, name="neg.csv")
    f = only_failure(db, landed.inbound_id)
    assert (f["category"], f["message_index"]) == ("mapping", 0)
    assert f["reason"] == "quantity is negative on a issue; the transaction type carries the direction"
    assert f["position"] == {"file": "neg.csv", "message": 0, "line": 2, "field": "quantity"}
    assert result.status == "partial"
    assert [r["movement_type"] for r in record_data(db)] == ["return"]


def test_unknown_item_and_department_are_master_data(db, archive):
    seed(db)
    data = consumption(
        GOOD,
        "2026-03-01 08:01:00,ITM99,1,EA,ICU,,,issue",
        "2026-03-01 08:02:00,ITM1,1,EA,PHARM,,,waste",
        GOOD2,
    )
    landed, result = ingest(db, archive, data, name="md.csv")
    assert result.status == "partial"
    rows = failure_rows(db, landed.inbound_id)
    assert [(f["category"], f["kind"], f["key"], f["message_index"]) for f in rows] == [
        ("master_data", "item", "ITM99", 1), ("master_data", "department", "PHARM", 2)]
    assert rows[0]["reason"] == "no item crosswalk entry for code 'ITM99'"
    assert rows[0]["position"] == {"file": "md.csv", "message": 1, "line": 3, "field": "item"}
    assert rows[1]["position"] == {"file": "md.csv", "message": 2, "line": 4, "field": "department"}
    assert [r["source_item"] for r in record_data(db)] == ["ITM1", "ITM2"]
    assert count(db, events) == 2


def test_inactive_crosswalk_entry_is_master_data(db, archive):
    from mappings.crosswalks import deactivate

    seed(db)
    with db.write() as conn:
        deactivate(conn, "item", "ITM1")
    landed, _ = ingest(db, archive, consumption(GOOD), name="inactive.csv")
    f = only_failure(db, landed.inbound_id)
    assert (f["category"], f["key"]) == ("master_data", "ITM1")
    assert f["reason"] == "item crosswalk entry for code 'ITM1' is inactive"


def test_ragged_row_and_stray_quote(db, archive):
    seed(db)
    data = consumption(GOOD, "2026-03-01 08:01:00,ITM1,1,EA", GOOD2)
    landed, result = ingest(db, archive, data, name="ragged.csv")
    f = only_failure(db, landed.inbound_id)
    assert f["category"] == "parse"
    assert f["reason"] == "row has 4 fields, the header has 8"
    assert f["position"] == {"file": "ragged.csv", "message": 1, "line": 3}
    assert result.status == "partial"
    assert count(db, records) == 2
