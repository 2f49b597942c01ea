"""HL7 mappings through the real pipeline (land -> parse -> map -> commit) on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import failures, message_keys, records
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig
from mappings.base import MappingContext
from mappings.canonical import Charge
from mappings.crosswalks import upsert_entries
from mappings.hl7_dft_p03 import DftP03Mapping
from parsers.hl7 import HL7Parser
from tests.helpers import DictCrosswalks
from tests.hl7.messages import DEPARTMENTS, ITEMS, SAMPLES, batch, dft_p03

EXPECTED = SAMPLES / "expected"


def seed(db: Database) -> None:
    with db.write() as conn:
        upsert_entries(conn, "department", [{"source_code": k, "target_code": v} for k, v in DEPARTMENTS.items()])
        upsert_entries(conn, "item", [{"source_code": k, "target_code": v} for k, v in ITEMS.items()])


def processor(db: Database, archive: Archive, mapping: str, **mapping_opts: Any) -> Processor:
    cfg = ChannelConfig.model_validate({"source": {"type": "folder", "path": "/nonexistent"},
                                        "parser": {"type": "hl7"}, "mapping": {"type": mapping, **mapping_opts}})
    return Processor(db, archive, {"hl7in": build_channel("hl7in", cfg)})


def ingest(db: Database, archive: Archive, proc: Processor, data: bytes, name: str = "in.hl7") -> Any:
    landed = land(db, archive, channel="hl7in", src=io.BytesIO(data), name=name)
    return proc.process(landed.duplicate_of or landed.inbound_id) if not landed.duplicate else None


def rows(db: Database, rtype: str) -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        return {r.natural_key: orjson.loads(r.data) for r in conn.execute(
            select(records.c.natural_key, records.c.data).where(records.c.type == rtype))}


def open_failures(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(failures).where(failures.c.status == "open").order_by(failures.c.id)))


def test_dft_p03_charges_net_and_link_supply(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")
    result = ingest(db, archive, proc, (SAMPLES / "dft_p03_cr.hl7").read_bytes())
    assert result.status == "processed" and result.records == 3
    charges = rows(db, "charge")
    expected = json.loads((EXPECTED / "dft_p03_cr.json").read_text())
    assert charges == expected
    # the credit nets the second charge's unit: 30.00 - 15.00
    net = sum(Decimal(c["amount"]) for c in charges.values() if c["charge_code"] == "SUP100")
    assert net == Decimal("15.00")


def test_dft_p03_reversal_with_negative_quantity_stays_negative(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")
    data = dft_p03("REV1", ft1=1).replace(b"|CG|SUP100^Suture kit|||1|15.00|", b"|CG|SUP100^Suture kit|||-1|15.00|")
    ingest(db, archive, proc, data)
    [charge] = rows(db, "charge").values()
    assert (charge["quantity"], charge["amount"]) == ("-1", "-15.00")


def test_dft_p03_item_from_a_z_segment(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03", item_field="ZFT-2.1")
    data = dft_p03("Z1", ft1=1).replace(b"SUP100\r", b"\rZFT|1|IMP777^LOT9\r")
    ingest(db, archive, proc, data)
    [charge] = rows(db, "charge").values()
    assert (charge["source_item"], charge["item"]) == ("IMP777", "ERP-IMP-777")


def test_missing_department_crosswalk_is_master_data_with_position(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")
    result = ingest(db, archive, proc, batch([dft_p03("M1"), dft_p03("M2", department="NOWHERE"), dft_p03("M3")]))
    assert result.status == "partial" and result.records == 6
    [f] = open_failures(db)
    assert (f.category, f.kind, f.key, f.message_index) == ("master_data", "department", "NOWHERE", 1)
    pos = orjson.loads(f.position)
    assert (pos["segment"], pos["segment_index"], pos["field"], pos["control"]) == ("FT1", 1, "FT1-13", "M2")


def test_duplicate_control_id_from_same_sender_is_not_charged_twice(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")
    first = ingest(db, archive, proc, dft_p03("DUP1", txn_prefix="A"))
    # the sender regenerates the message (other bytes, other transaction ids) with the same MSH-10
    again = ingest(db, archive, proc, dft_p03("DUP1", txn_prefix="B"), "resend.hl7")
    other_sender = ingest(db, archive, proc, dft_p03("DUP1", txn_prefix="C", sender="OTHERSYS"), "other.hl7")
    assert (first.records, first.duplicates) == (3, 0)
    assert (again.records, again.duplicates, again.status) == (0, 1, "processed")
    assert other_sender.records == 3
    assert sorted({c["transaction_id"][0] for c in rows(db, "charge").values()}) == ["A", "C"]
    with db.read() as conn:
        keys = conn.execute(select(message_keys.c.sender, message_keys.c.control_id)).all()
    assert sorted(keys) == [("BILLSYS@GENHOSP", "DUP1"), ("OTHERSYS@GENHOSP", "DUP1")]
    # the same bytes again: a duplicate landing, never processed
    assert ingest(db, archive, proc, dft_p03("DUP1", txn_prefix="A"), "again.hl7") is None


def test_duplicate_inside_one_batch_and_reprocess_is_not_a_duplicate(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")
    result = ingest(db, archive, proc, batch([dft_p03("B1", txn_prefix="X"), dft_p03("B1", txn_prefix="Y"),
                                              dft_p03("B2", department="NOWHERE")]))
    assert (result.records, result.duplicates) == (3, 1)
    with db.write() as conn:
        upsert_entries(conn, "department", [{"source_code": "NOWHERE", "target_code": "CC-9"}])
    again = proc.reprocess(result.inbound_id)
    assert again is not None and again.status == "processed" and again.resolved == 1 and again.records == 3


def test_resends_in_a_large_batch_are_duplicates_wherever_their_keys_fall(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")  # batches of 1,000 messages
    msgs = [dft_p03(f"L{i:04d}", ft1=1) for i in range(999)]
    # a resend of L0499 in the same batch: sorted, its key comes right after the original's, in the
    # next 500-key insert; and a resend of L0000 in the file's next batch
    msgs += [dft_p03("L0499", ft1=1, txn_prefix="R1"), dft_p03("L0000", ft1=1, txn_prefix="R2")]
    result = ingest(db, archive, proc, batch(msgs))
    assert (result.status, result.messages, result.records, result.duplicates) == ("processed", 1001, 999, 2)
    assert not [c for c in rows(db, "charge").values() if c["transaction_id"].startswith("R")]
    with db.read() as conn:
        owners = dict(conn.execute(select(message_keys.c.control_id, message_keys.c.message_index)).all())
    assert len(owners) == 999 and (owners["L0499"], owners["L0000"]) == (499, 0)


def test_unknown_message_type_is_landed_and_reported_unmapped(db: Database, archive: Archive) -> None:
    proc = processor(db, archive, "hl7_dft_p03")
    result = ingest(db, archive, proc, (SAMPLES / "unknown_type_oru_r01.hl7").read_bytes())
    assert result.status == "failed"
    [f] = open_failures(db)
    assert (f.category, f.kind, f.key) == ("mapping", "message_type", "ORU^R01")
    assert "not mapped" in f.reason


def test_parse_errors_are_quarantined_and_the_rest_commits(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_dft_p03")
    data = dft_p03("P1") + (SAMPLES / "bad_not_utf8.hl7").read_bytes() + dft_p03("P3")
    result = ingest(db, archive, proc, data)
    assert result.status == "partial" and result.records == 6
    [f] = open_failures(db)
    pos = orjson.loads(f.position)
    assert (f.category, pos["message"], pos["segment"], pos["field"]) == ("parse", 1, "PID", "PID-5")


def test_adt_encounter_lifecycle(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_adt")
    states = []
    for sample in ("adt_a01.hl7", "adt_a03.hl7", "adt_a13.hl7", "adt_a11.hl7"):
        ingest(db, archive, proc, (SAMPLES / sample).read_bytes(), sample)
        [enc] = rows(db, "encounter").values()
        states.append((enc["last_event"], enc["status"], enc["discharged_at"] is not None))
    assert states == [("A01", "admitted", False), ("A03", "discharged", True), ("A13", "admitted", False),
                      ("A11", "cancelled", False)]
    [enc] = rows(db, "encounter").values()
    assert enc == json.loads((EXPECTED / "adt_a11.json").read_text())
    assert not open_failures(db)


def test_mfn_m16_and_m01_items_and_status(db: Database, archive: Archive) -> None:
    seed(db)
    proc = processor(db, archive, "hl7_mfn", m01_fields={"description": "ZIM-2", "unit": "ZIM-3",
                                                          "unit_price": "ZIM-4"})
    ingest(db, archive, proc, (SAMPLES / "mfn_m16.hl7").read_bytes())
    ingest(db, archive, proc, (SAMPLES / "mfn_m01.hl7").read_bytes())
    items = rows(db, "item")
    assert items == json.loads((EXPECTED / "mfn_items.json").read_text())
    # a later MAC reactivates an item: an update of the same record
    react = (SAMPLES / "mfn_m16.hl7").read_bytes().replace(b"MFN00001", b"MFN00003").replace(b"MFE|MDC|", b"MFE|MAC|")
    ingest(db, archive, proc, react, "react.hl7")
    assert rows(db, "item")["SUP100"]["status"] == "active"


def test_adt_a04_registers_and_a08_updates(db: Database, archive: Archive) -> None:
    proc = processor(db, archive, "hl7_adt")
    a01 = (SAMPLES / "adt_a01.hl7").read_bytes()
    a04 = a01.replace(b"A01", b"A04").replace(b"ADT00001", b"ADT00010").replace(b"|I|4WEST", b"|O|CLINIC")
    a04 = a04.replace(b"|20261126065500", b"")
    ingest(db, archive, proc, a04, "a04.hl7")
    [enc] = rows(db, "encounter").values()
    assert (enc["status"], enc["patient_class"], enc["location"], enc["cost_center"]) == (
        "registered", "O", "CLINIC^401^A", None)  # no crosswalk entry: optional unless require_cost_center
    a08 = a04.replace(b"A04", b"A08").replace(b"ADT00010", b"ADT00011").replace(b"|O|CLINIC", b"|I|CLINIC")
    ingest(db, archive, proc, a08, "a08.hl7")
    [enc] = rows(db, "encounter").values()
    assert (enc["status"], enc["patient_class"], enc["last_event"]) == ("registered", "I", "A08")


def test_dft_p03_charges_are_what_validation_would_build() -> None:
    # the mapping builds Charges without a second validation (Charge.trusted): each must be
    # exactly the Charge that validating its own values gives
    [env] = HL7Parser().parse(io.BytesIO((SAMPLES / "dft_p03_cr.hl7").read_bytes()), name="in.hl7")
    ctx = MappingContext(channel="c", file_name="in.hl7", inbound_id=1, received_at=datetime.now(UTC),
                         crosswalks=DictCrosswalks({"department": DEPARTMENTS, "item": ITEMS}))
    charges = DftP03Mapping().map(env, ctx)
    assert len(charges) == 3
    for charge in charges:
        assert isinstance(charge, Charge)
        again = Charge.model_validate(dict(charge))
        assert again == charge and again.model_dump_json() == charge.model_dump_json()


def test_trusted_construction_needs_every_field() -> None:
    with pytest.raises(TypeError, match=r"missing \['transaction_id'\], unknown \['txn'\]"):
        Charge.trusted(**{k: None for k in Charge.model_fields if k != "transaction_id"}, txn="1")
