"""X12 through land -> parse -> map -> commit, on SQLite and PostgreSQL.

Records and the acknowledgments (outbox events) commit together; failures
are stored with their positions; a resent interchange is a duplicate.
"""

from __future__ import annotations

import io
from typing import Any

import orjson
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import control_numbers, events, failures, inbound_files, message_keys, records
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig
from mappings.crosswalks import upsert_entries
from tests.x12.conftest import sample


def processor(db: Database, archive: Archive, mapping: str = "x12_837", **mapping_options: Any) -> Processor:
    cfg = ChannelConfig.model_validate({
        "source": {"type": "folder", "path": "/nonexistent"},
        "parser": {"type": "x12"},
        "mapping": {"type": mapping, **mapping_options},
    })
    return Processor(db, archive, {"edi": build_channel("edi", cfg)})


def run(db: Database, archive: Archive, data: bytes, name: str, **kw: Any) -> Any:
    landed = land(db, archive, channel="edi", src=io.BytesIO(data), name=name)
    return processor(db, archive, **kw).process(landed.inbound_id)


def all_rows(db: Database, table: Any) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(table)).all())


def test_837_commits_claims_and_the_999_as_an_outbox_event(db: Database, archive: Archive) -> None:
    result = run(db, archive, sample("837p.x12"), "claims.x12",
                 acks={"partner": "clearhouse", "return_channel": "clearhouse_sftp"})
    assert result.status == "processed" and result.records == 2
    recs = {r.natural_key: orjson.loads(r.data) for r in all_rows(db, records) if r.type == "claim"}
    assert set(recs) == {"TBS0001:PCN00000000", "TBS0001:PCN00000001"}
    acks = [orjson.loads(e.payload) for e in all_rows(db, events) if e.event_type.startswith("edi.ack.")]
    assert sorted(a["type"] for a in acks) == ["edi.ack.999.created", "edi.ack.ta1.created"]
    ack = next(a for a in acks if a["type"] == "edi.ack.999.created")["data"]
    assert ack["kind"] == "999" and ack["partner"] == "clearhouse" and ack["return_channel"] == "clearhouse_sftp"
    assert ack["filename"].startswith("999_clearhouse_") and "IK5*A" in ack["content"]
    # the ack interchange and group numbers come from the partner's sequence
    seq = {(r.partner, r.kind): r.value for r in all_rows(db, control_numbers)}
    assert seq == {("clearhouse", "isa"): 2, ("clearhouse", "gs"): 1}


def test_835_remittance_commits(db: Database, archive: Archive) -> None:
    result = run(db, archive, sample("835.x12"), "era.x12", mapping="x12_835")
    assert result.status == "processed"
    (rec,) = [r for r in all_rows(db, records) if r.type == "remittance"]
    assert rec.natural_key == "1512345678:EFT20261126001"


def test_unknown_set_is_landed_reported_and_rejected_in_the_999(db: Database, archive: Archive) -> None:
    result = run(db, archive, sample("bad_unknown_set.x12"), "odd.x12", mapping="x12_850")
    assert result.status == "partial"  # the interchange's ack still committed
    (f,) = all_rows(db, failures)
    assert f.category == "parse" and "123 is not supported" in f.reason
    assert orjson.loads(f.position)["field"] == "ST01"
    (ack,) = [orjson.loads(e.payload)["data"] for e in all_rows(db, events)]
    assert "IK5*R*1" in ack["content"] and ack["status"] == "R"
    (row,) = all_rows(db, inbound_files)
    assert row.status == "partial" and row.failure_count == 1


def test_rejected_interchange_commits_nothing_but_its_ta1(db: Database, archive: Archive) -> None:
    result = run(db, archive, sample("bad_iea_count.x12"), "bad.x12")
    assert result.records == 0
    assert [r.type for r in all_rows(db, records)] == []
    (f,) = all_rows(db, failures)
    assert "IEA01" in f.reason
    (ev,) = all_rows(db, events)
    assert ev.event_type == "edi.ack.ta1.created" and "*R*021" in orjson.loads(ev.payload)["data"]["content"]


def test_a_resent_interchange_control_number_is_a_duplicate(db: Database, archive: Archive) -> None:
    first = run(db, archive, sample("837p.x12"), "a.x12")
    assert first.records == 2
    # the same ISA13 from the same sender, in a file whose bytes differ (another date)
    resend = sample("837p.x12").replace(b"*261126*1200*", b"*261127*0800*", 1)
    second = run(db, archive, resend, "b.x12")
    assert second.records == 0 and second.duplicates == 1
    keys = all_rows(db, message_keys)
    assert [(k.sender, k.control_id) for k in keys] == [("CLEARHOUSE01/CLEARHOUSE01", "000001001/1001/0001")]
    assert len([r for r in all_rows(db, records) if r.type == "claim"]) == 2


def test_810_with_unknown_vendor_is_master_data_then_reprocessed(db: Database, archive: Archive) -> None:
    landed = land(db, archive, channel="edi", src=io.BytesIO(sample("810.x12")), name="inv.x12")
    proc = processor(db, archive, mapping="x12_810")
    assert proc.process(landed.inbound_id).status == "partial"
    (f,) = all_rows(db, failures)
    assert (f.category, f.kind, f.key) == ("master_data", "vendor", "ACMEMED")
    with db.write() as conn:
        upsert_entries(conn, "vendor", [{"source_code": "ACMEMED", "target_code": "V100"}])
    again = processor(db, archive, mapping="x12_810").reprocess(landed.inbound_id)
    assert again is not None and again.status == "processed"
    (inv,) = [r for r in all_rows(db, records) if r.type == "invoice"]
    assert inv.natural_key == "V100:INV-90017"


def test_one_channel_maps_every_set_of_a_vendor_interchange(db: Database, archive: Archive) -> None:
    with db.write() as conn:
        upsert_entries(conn, "vendor", [{"source_code": "ACMEMED", "target_code": "V100"}])
    data = sample("855.x12") + sample("856.x12") + sample("810.x12") + sample("832.x12")
    result = run(db, archive, data, "acme_mailbox.x12", mapping="x12", acks={"partner": "acme"})
    assert result.status == "processed"
    kinds = sorted(r.type for r in all_rows(db, records))
    assert kinds == ["invoice", "item", "item", "purchase_order_ack", "shipment"]
    acks = sorted(e.event_type for e in all_rows(db, events) if e.event_type.startswith("edi.ack."))
    assert acks == ["edi.ack.997.created", "edi.ack.999.created", "edi.ack.999.created", "edi.ack.999.created"]
