"""X12 through land -> parse -> map -> commit, on SQLite and PostgreSQL.

Records and the acknowledgments (outbox events) commit together; failures
are stored with their positions; a resent interchange is a duplicate.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
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


@pytest.mark.parametrize("bend", ["merged ISA03/ISA04", "two-character ISA11"])
def test_a_malformed_isa_is_a_failure_answered_with_a_well_formed_ta1(db: Database, archive: Archive,
                                                                      bend: str) -> None:
    """The TA1 of a rejected ISA is addressed with what could be read of it; values that do not fit the
    reply's fixed-width ISA once raised while rendering it, so the file crashed its processor on every
    retry and never showed up as a failure (found by fuzzing)."""
    data = sample("850.x12")
    if bend == "merged ISA03/ISA04":
        at = [i for i, ch in enumerate(data[:106]) if ch == ord("*")][3]
        data = data[:at] + b"%" + data[at + 1 :]  # ISA04 onwards shift: ISA05 holds a 15-character id
    else:
        data = data.replace(b"*^*00501*", b"*^^*00501*", 1)
    result = run(db, archive, data, "bent.x12", mapping="x12_850")
    assert result.records == 0  # (status partial: the TA1 is committed, as for any rejected interchange)
    (f,) = all_rows(db, failures)
    assert "rejected: ISA is" in f.reason and f.category == "parse"
    (ta1,) = ack_payloads(db)
    isa = ta1["content"][:106]
    assert ta1["kind"] == "TA1" and isa.startswith("ISA*00*") and len(isa.split("~")[0]) == 105
    assert "~TA1*" in ta1["content"] and "*R*" in ta1["content"]


def ack_payloads(db: Database) -> list[dict[str, Any]]:
    return [orjson.loads(e.payload)["data"] for e in all_rows(db, events) if e.event_type.startswith("edi.ack.")]


def test_a_resent_interchange_is_a_duplicate_answered_with_a_ta1_025(db: Database, archive: Archive) -> None:
    first = run(db, archive, sample("837p.x12"), "a.x12", acks={"partner": "clearhouse"})
    assert first.records == 2
    assert sorted(a["kind"] for a in ack_payloads(db)) == ["999", "TA1"]
    # the same ISA13 from the same sender, in a file whose bytes differ (another date)
    resend = sample("837p.x12").replace(b"*261126*1200*", b"*261127*0800*", 1)
    second = run(db, archive, resend, "b.x12", acks={"partner": "clearhouse"})
    assert second.records == 0 and second.duplicates == 2  # the set and the interchange
    keys = sorted((k.sender, k.control_id) for k in all_rows(db, message_keys))
    assert keys == [("CLEARHOUSE01/CLEARHOUSE01", "000001001/1001/0001"), ("ZZ:CLEARHOUSE01", "000001001")]
    assert len([r for r in all_rows(db, records) if r.type == "claim"]) == 2
    # the resend gets a TA1 rejection with note 025 (duplicate interchange control number), no 999
    acks = ack_payloads(db)
    assert sorted(a["kind"] for a in acks) == ["999", "TA1", "TA1"]
    dup = acks[-1]
    assert dup["kind"] == "TA1" and dup["status"] == "R"
    assert "~TA1*000001001*261127*0800*R*025~" in dup["content"]
    # a file from another sender with the same ISA13 is no duplicate
    other = sample("837p.x12").replace(b"CLEARHOUSE01   ", b"OTHERHOUSE     ", 1)
    third = run(db, archive, other, "c.x12")
    assert third.duplicates == 0 and third.records == 0  # claims keep their natural keys: updated, not new
    assert "*A*000~" in ack_payloads(db)[-2]["content"]


def test_a_rejected_interchange_may_be_resent_with_its_isa13(db: Database, archive: Archive) -> None:
    bad = run(db, archive, sample("bad_iea_count.x12"), "bad.x12")
    assert bad.status == "partial" or bad.status == "failed"
    fixed = sample("bad_iea_count.x12").replace(b"IEA*2*", b"IEA*1*")
    again = run(db, archive, fixed, "fixed.x12")
    assert again.duplicates == 0 and again.status == "processed"


def test_ack_control_numbers_are_spent_only_when_the_ack_commits(db: Database) -> None:
    from mappings.x12_837 import Claim837Mapping
    from outbox.writer import Origin, write_events
    from tests.x12.conftest import ctx, parse

    mapping = Claim837Mapping(Claim837Mapping.Config.model_validate({"acks": {"partner": "clearhouse"}}))
    report = parse(sample("837p.x12"))[-1]
    # mapping touches no database: the drafts say what to send, numbered when written
    drafts = list(mapping.map(report, ctx()))
    assert [d.payload["kind"] for d in drafts] == ["TA1", "999"] and "content" not in drafts[0].payload
    try:
        with db.write() as conn:
            write_events(db, conn, [(d, Origin()) for d in drafts])
            raise RuntimeError("the batch fails after the acks were written")
    except RuntimeError:
        pass
    assert all_rows(db, control_numbers) == [] and all_rows(db, events) == []
    with db.write() as conn:
        write_events(db, conn, [(d, Origin()) for d in drafts])
    ta1, ack = ack_payloads(db)
    assert ta1["filename"] == "TA1_clearhouse_000000001.x12" and "*000000001*0*P*:~" in ta1["content"]
    assert ack["filename"] == "999_clearhouse_000000002.x12" and "~GS*FA*BRIDGEHOSP*CLEARHOUSE01*" in ack["content"]
    assert "*1*X*005010X231A1~" in ack["content"]  # GS06 from the partner's gs sequence
    seq = {(r.partner, r.kind): r.value for r in all_rows(db, control_numbers)}
    assert seq == {("clearhouse", "isa"): 2, ("clearhouse", "gs"): 1}


def test_acks_go_only_to_their_partners_return_channel(db: Database, archive: Archive, tmp_path: Path) -> None:
    from tests.outbox.helpers import delivery_rows, make_relay

    run(db, archive, sample("837p.x12"), "a.x12", acks={"partner": "clearhouse", "return_channel": "clearhouse_out"})
    other = sample("837p.x12").replace(b"CLEARHOUSE01   ", b"OTHERHOUSE     ", 1)
    run(db, archive, other, "b.x12", acks={"partner": "other", "return_channel": "other_out"})
    routes = {e.route for e in all_rows(db, events) if e.event_type.startswith("edi.ack.")}
    assert routes == {"clearhouse_out", "other_out"}
    relay = make_relay(db, {
        "erp": {"type": "folder", "subscribe": ["*"], "directory": str(tmp_path / "erp")},
        "clearhouse_out": {"type": "folder", "subscribe": [], "directory": str(tmp_path / "clearhouse")},
        "other_out": {"type": "folder", "subscribe": ["edi.ack.*"], "directory": str(tmp_path / "other")},
    })
    relay.run_until_idle()
    assert sorted(p.name for p in (tmp_path / "clearhouse").iterdir()) == [
        "999_clearhouse_000000002.x12", "TA1_clearhouse_000000001.x12"]
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == [
        "999_other_000000002.x12", "TA1_other_000000001.x12"]
    assert "~TA1*000001001*" in (tmp_path / "other" / "TA1_other_000000001.x12").read_text()
    # the ERP gets the claims, not the partners' acks
    assert {r.event_type for r in delivery_rows(db, "erp")} == {"revenue.claim.recorded"}


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
