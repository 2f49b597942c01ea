"""Outbound 850s: envelopes and counts, per-partner control numbers, round trip through our parser."""

from __future__ import annotations

import io
import multiprocessing
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import events
from bridge.settings import Settings
from mappings.canonical import PurchaseOrder, PurchaseOrderLine
from mappings.x12_850 import PurchaseOrder850Mapping
from outbox.x12_outbound import allocate, allocate_control_number, emit_850, purchase_order_850
from parsers.x12 import X12Parser
from parsers.x12.partners import PartnerConfig
from tests.x12.conftest import ctx

PARTNER = PartnerConfig(isa_id="ACMEMED", our_isa_id="BRIDGEHOSP", isa_qualifier="01", request_ta1=True,
                        return_channel="acme_sftp", vendor="V100")

PO = PurchaseOrder(
    po_number="PO-2026-0099", vendor="V100", order_date=date(2026, 11, 26), currency="USD", ship_to="MAIN-DOCK",
    bill_to="BRIDGEHOSP", cost_center="CC4410", total=Decimal("481.00"),
    lines=[
        PurchaseOrderLine(line_number="1", item="ITM-1001", vendor_part="AC-55-10", description="GAUZE SPONGE 4X4",
                          quantity=Decimal("10"), unit="BX", unit_price=Decimal("12.50"), need_by=date(2026, 12, 3)),
        PurchaseOrderLine(line_number="2", item="ITM-2002", quantity=Decimal("4"), unit="CS",
                          unit_price=Decimal("89.00"), cost_center="CC4420"),
    ],
)


def test_850_envelopes_and_counts() -> None:
    text = purchase_order_850(PO, PARTNER, isa_control=42, gs_control=7, now=datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    segs = text.split("~")[:-1]
    assert len(segs[0]) == 105 and segs[0].split("*")[13:16] == ["000000042", "1", "P"]
    assert segs[0].split("*")[7:9] == ["01", "ACMEMED        "]
    assert segs[1].split("*")[6] == "7" and segs[1].endswith("*X*005010")
    st = segs.index("ST*850*0001")
    se = next(i for i, s in enumerate(segs) if s.startswith("SE*"))
    assert segs[se] == f"SE*{se - st + 1}*0001"
    assert segs[-2:] == ["GE*1*7", "IEA*1*000000042"]


def test_850_round_trips_through_our_parser() -> None:
    text = purchase_order_850(PO, PARTNER, isa_control=1, gs_control=1)
    msgs = list(X12Parser().parse(io.BytesIO(text.encode()), name="850.x12"))
    assert [m.error for m in msgs] == [None, None]
    assert msgs[1].data.status == "A"  # our own 999 would accept it
    (back,) = PurchaseOrder850Mapping().map(msgs[0], ctx())
    assert back.model_copy(update={"source_channel": None}) == PO


def test_4010_partner_with_other_delimiters_round_trips() -> None:
    partner = PARTNER.model_copy(update={"version": "00401", "element_separator": "|", "segment_terminator": "'",
                                         "component_separator": "}", "line_break": True})
    text = purchase_order_850(PO, partner, isa_control=5, gs_control=5)
    assert text[3] == "|" and text[82] == "U" and "\n" in text
    msgs = list(X12Parser().parse(io.BytesIO(text.encode()), name="850.x12"))
    (back,) = PurchaseOrder850Mapping().map(msgs[0], ctx())
    assert back.po_number == PO.po_number and len(back.lines) == 2


def test_partner_profiles_in_settings_refuse_clashing_delimiters() -> None:
    s = Settings.model_validate({"partners": {"acme": PARTNER.model_dump()}})
    assert s.partners["acme"].isa_id == "ACMEMED"
    with pytest.raises(ValueError, match="delimiters"):
        PartnerConfig(isa_id="A", our_isa_id="B", component_separator="*")


def test_emit_850_writes_an_outbox_event_with_sequenced_control_numbers(db: Database) -> None:
    for _ in range(2):
        with db.write() as conn:
            emit_850(db, conn, PO, "acme", PARTNER)
    with db.read() as conn:
        rows = conn.execute(select(events).order_by(events.c.seq)).all()
    assert [r.event_type for r in rows] == ["purchase_order.x12_850.created"] * 2
    payloads = [orjson.loads(r.payload)["data"] for r in rows]
    assert [p["interchange_control"] for p in payloads] == ["000000001", "000000002"]
    assert payloads[0]["kind"] == "850" and payloads[0]["return_channel"] == "acme_sftp"
    assert "IEA*1*000000002~" in payloads[1]["content"]
    # routed to the vendor's return channel alone, whatever else subscribes to 850s
    assert [r.route for r in rows] == ["acme_sftp", "acme_sftp"]


def test_a_rolled_back_allocation_is_never_sent_and_sequences_are_per_partner(db: Database) -> None:
    assert allocate_control_number(db, "acme", "isa") == 1
    with pytest.raises(RuntimeError), db.write() as conn:
        assert allocate(conn, "acme", "isa") == 2
        raise RuntimeError("the 850 was not written")
    assert allocate_control_number(db, "acme", "isa") == 2
    assert allocate_control_number(db, "other", "isa") == 1
    assert allocate_control_number(db, "acme", "gs") == 1


def _allocate_many(url: str, n: int, barrier: Any, results: Any) -> None:
    d = Database(url)
    try:
        d.upgrade()  # connects and warms up before the race starts
        barrier.wait(timeout=120)
        results.put([allocate_control_number(d, "acme", "isa") for _ in range(n)])
    finally:
        d.dispose()


def test_concurrent_allocation_across_processes_never_repeats(pg_db: Database) -> None:
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(3), spawn.Queue()
    procs = [spawn.Process(target=_allocate_many, args=(pg_db.url, 100, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    numbers = [n for r in got for n in r]
    assert sorted(numbers) == list(range(1, 301))
    assert all(r == sorted(r) for r in got)


def test_cli_send_850_queues_the_interchange_for_the_partner(tmp_path, capsys) -> None:  # noqa: ANN001
    from bridge.cli import main

    url = f"sqlite:///{tmp_path / 'b.db'}"
    Database(url).upgrade()
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(orjson.dumps({"database_url": url, "data_dir": str(tmp_path / "var"),
                                 "partners": {"acme": PARTNER.model_dump()}}).decode())
    po_file = tmp_path / "po.json"
    po_file.write_bytes(PO.__pydantic_serializer__.to_json(PO))
    assert main(["-c", str(cfg), "x12", "send-850", str(po_file), "--partner", "acme"]) == 0
    assert "850_acme_PO-2026-0099_000000001.x12" in capsys.readouterr().out
    assert main(["-c", str(cfg), "x12", "send-850", str(po_file), "--partner", "nobody"]) == 2
    d = Database(url)
    with d.read() as conn:
        (row,) = conn.execute(select(events)).all()
    d.dispose()
    assert row.event_type == "purchase_order.x12_850.created"


def test_cli_check_reports_errors_and_acks(capsys) -> None:  # noqa: ANN001
    from bridge.cli import main
    from tests.x12.conftest import SAMPLES

    assert main(["x12", "check", str(SAMPLES / "bad_se_count.x12")]) == 1
    out = capsys.readouterr().out
    assert "SE01 does not match" in out and "ack 999 R" in out


def test_a_partners_999_names_our_850_interchange() -> None:
    from itertools import count

    from mappings.x12_999 import FunctionalAck999Mapping
    from parsers.x12.acks import build_acks

    text = purchase_order_850(PO, PARTNER, isa_control=314, gs_control=314)
    report = list(X12Parser().parse(io.BytesIO(text.encode()), name="850.x12"))[-1].data
    numbers = count(900)
    (their_999,) = build_acks(report, next_control=lambda _k: next(numbers), now=datetime.now(UTC), ta1="never")
    msgs = list(X12Parser().parse(io.BytesIO(their_999.content.encode()), name="999.x12"))
    mapping = FunctionalAck999Mapping(FunctionalAck999Mapping.Config.model_validate({"acks": {"partner": "acme"}}))
    (event,) = mapping.map(msgs[0], ctx())
    assert event.event_type == "edi.functional_ack.received"
    assert (event.payload["partner"], event.payload["interchange_control"], event.payload["status"],
            event.payload["kind"]) == ("acme", "000000314", "A", "999")
    assert event.payload["sets"] == [{"set": "850", "control": "0001", "status": "A", "codes": []}]
    assert mapping.map(msgs[1], ctx()) == []  # and no ack of the ack
