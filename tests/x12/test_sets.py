"""Each transaction set bridge maps, from its sample to canonical records."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from bridge.errors import MappingError, MasterDataError
from mappings.canonical import (
    Claim,
    Invoice,
    Item,
    PurchaseOrder,
    PurchaseOrderAck,
    Remittance,
    Shipment,
)
from mappings.x12_810 import Invoice810Mapping
from mappings.x12_832 import Catalog832Mapping
from mappings.x12_835 import Remittance835Mapping
from mappings.x12_837 import Claim837Mapping
from mappings.x12_850 import PurchaseOrder850Mapping
from mappings.x12_855 import PurchaseOrderAck855Mapping
from mappings.x12_856 import Shipment856Mapping
from mappings.x12_common import money
from parsers.x12.sets import hl_tree, loops
from tests.x12.conftest import ctx, parse, sample

VENDORS = {"vendor": {"ACMEMED": "V100"}}


def one_set(name: str):  # noqa: ANN201
    msgs = parse(sample(name), name=name)
    sets = [m for m in msgs if m.type != "interchange"]
    assert len(sets) == 1 and sets[0].error is None, sets[0].error
    return sets[0]


def test_837p_claims_with_sv1_lines() -> None:
    msg = one_set("837p.x12")
    assert msg.type == "837" and msg.meta["variant"] == "837P"
    assert msg.control_id == "000001001/1001/0001" and msg.sender == "CLEARHOUSE01/CLEARHOUSE01"
    claims = Claim837Mapping().map(msg, ctx())
    assert len(claims) == 2
    c = claims[0]
    assert isinstance(c, Claim)
    assert c.claim_id == "PCN00000000" and c.claim_type == "professional"
    assert c.submitter == "TBS0001" and c.receiver == "BPG0001" and c.billing_provider == "1999999984"
    assert c.payer == "99999" and c.member_id == "MBR00000000" and c.facility_code == "11"
    assert c.total_charge == Decimal("225.00") and c.service_date == date(2026, 11, 1)
    assert [(ln.line_number, ln.procedure, ln.modifiers, ln.charge) for ln in c.lines] == [
        (1, "99213", ["25"], Decimal("100.00")), (2, "99214", ["25"], Decimal("125.00"))]
    assert c.control_number == "000001001/1001/0001"


def test_837i_claim_with_sv2_revenue_codes() -> None:
    msg = one_set("837i.x12")
    assert msg.meta["variant"] == "837I"
    (c,) = Claim837Mapping().map(msg, ctx())
    assert c.claim_type == "institutional" and c.claim_id == "PCN00000100"
    assert [(ln.revenue_code, ln.procedure, ln.units) for ln in c.lines] == [("0450", "99283", Decimal(1))] * 2


def test_835_remittance_clp_svc_cas() -> None:
    (r,) = Remittance835Mapping().map(one_set("835.x12"), ctx())
    assert isinstance(r, Remittance)
    assert r.trace_number == "EFT20261126001" and r.payer == "1512345678" and r.payee == "1999999984"
    assert r.payment_amount == Decimal("370.00") and r.payment_method == "ACH" and r.payment_date == date(2026, 11, 26)
    first = r.claims[0]
    assert (first.claim_id, first.status, first.charge, first.paid) == ("PCN00000000", "1", Decimal("225.00"),
                                                                        Decimal("185.00"))
    assert first.payer_claim_number == "PAYERCLM00000000"
    assert first.services[0]["procedure"] == "99213"
    assert first.services[0]["adjustments"] == [{"group": "CO", "reason": "45", "amount": "10.00"},
                                                {"group": "PR", "reason": "2", "amount": "10.00"}]


def test_850_purchase_order() -> None:
    (po,) = PurchaseOrder850Mapping().map(one_set("850.x12"), ctx())
    assert isinstance(po, PurchaseOrder)
    assert (po.po_number, po.vendor, po.order_date, po.cost_center, po.ship_to) == (
        "PO-2026-0042", "V100", date(2026, 11, 26), "CC4410", "MAIN-DOCK")
    assert po.total == Decimal("481") and len(po.lines) == 2
    assert (po.lines[0].item, po.lines[0].vendor_part, po.lines[0].quantity, po.lines[0].unit_price,
            po.lines[0].need_by) == ("ITM-1001", "AC-55-10", Decimal(10), Decimal("12.5"), date(2026, 12, 3))


def test_855_line_statuses_4010() -> None:
    (ack,) = PurchaseOrderAck855Mapping().map(one_set("855.x12"), ctx(VENDORS))
    assert isinstance(ack, PurchaseOrderAck)
    assert (ack.po_number, ack.vendor, ack.ack_type, ack.ack_number) == ("PO-2026-0042", "V100", "AC", "SO-77881")
    assert [(ln.line_number, ln.status, ln.quantity) for ln in ack.lines] == [
        ("1", "IA", Decimal(10)), ("2", "IA", Decimal(2)), ("2", "IB", Decimal(2)), ("3", "IR", Decimal(1))]
    assert ack.lines[2].expected_date == date(2026, 12, 10)


def test_855_unknown_vendor_passes_through_as_sent() -> None:
    (ack,) = PurchaseOrderAck855Mapping().map(one_set("855.x12"), ctx())
    assert ack.vendor == "ACMEMED"


def test_856_hierarchy_lots_and_serials() -> None:
    msg = one_set("856.x12")
    roots = hl_tree(enumerate(msg.data.segments, start=1))
    assert [n.level for n in roots[0].walk()] == ["S", "O", "P", "I", "I"]
    (s,) = Shipment856Mapping().map(msg, ctx(VENDORS))
    assert isinstance(s, Shipment)
    assert (s.shipment_id, s.vendor, s.carrier, s.tracking, s.po_numbers) == (
        "ASN-55001", "V100", "UPSN", "1Z999AA10123456784", ["PO-2026-0042"])
    assert s.expected_at == date(2026, 11, 29)
    a, b = s.lines
    assert (a.item, a.lot, a.expires, a.package, a.po_number, a.quantity) == (
        "ITM-1001", "LOT2026A", date(2028, 10, 31), "00012345678900000017", "PO-2026-0042", Decimal(10))
    assert (b.lot, b.serial, b.unit) == ("LOT77B", "SN-000991", "CS")


@pytest.mark.parametrize(("old", "new", "field", "segment"), [
    (b"BSN*00*ASN-55001*20261127*0700~", b"BSN*00*ASN-55001*20261327*0700~", "BSN03", "BSN"),
    (b"BSN*00*ASN-55001*20261127*0700~", b"BSN*00*ASN-55001*20261127*2561~", "BSN04", "BSN"),
    (b"DTM*017*20261129~", b"DTM*017*2026-11-29~", "DTM02", "DTM"),
    (b"DTM*011*20261127~", b"DTM*011*20261127*07X0~", "DTM03", "DTM"),
])
def test_856_bad_date_or_time_is_an_error_naming_the_element(old: bytes, new: bytes, field: str,
                                                              segment: str) -> None:
    assert old in sample("856.x12")
    (msg,) = [m for m in parse(sample("856.x12").replace(old, new)) if m.type == "856"]
    with pytest.raises(MappingError) as info:
        Shipment856Mapping().map(msg, ctx(VENDORS))
    assert info.value.position.field == field and info.value.position.segment == segment
    assert field in info.value.reason


def test_856_time_goes_with_its_date() -> None:
    text = sample("856.x12").replace(b"DTM*011*20261127~", b"DTM*011*20261127*1432~")
    (msg,) = [m for m in parse(text) if m.type == "856"]
    (s,) = Shipment856Mapping().map(msg, ctx(VENDORS))
    assert s.shipped_at == datetime(2026, 11, 27, 14, 32, tzinfo=UTC)


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-inf", "sNaN", "1E3"])
def test_an_amount_that_is_not_an_x12_number_is_refused(amount: str) -> None:
    # the parser refuses it in the elements its set tables type as R/N (999 code 6) ...
    (msg, _) = parse(sample("810.x12").replace(b"IT1*1*10*BX*12.5*", b"IT1*1*10*BX*" + amount.encode() + b"*"))
    assert msg.error is not None and msg.error.position.field == "IT104"
    # ... and money() refuses NaN and Infinity in any element a mapping reads as an amount
    if amount != "1E3":
        with pytest.raises(MappingError) as info:
            money(["SAC", "C", "", "", "", amount], 5, msg.position)
        assert info.value.reason == "SAC05 is not a number" and info.value.position.field == "SAC05"


def test_810_invoice_with_tds_and_sac() -> None:
    (inv,) = Invoice810Mapping().map(one_set("810.x12"), ctx(VENDORS))
    assert isinstance(inv, Invoice)
    assert (inv.invoice_number, inv.vendor, inv.po_number, inv.total) == ("INV-90017", "V100", "PO-2026-0042",
                                                                          Decimal("321.00"))
    assert (inv.tax, inv.allowances, inv.charges) == (Decimal("12.5"), Decimal("10.00"), Decimal("15.50"))
    assert [ln.amount for ln in inv.lines] == [Decimal("125.0"), Decimal("178")]


def test_810_needs_a_known_vendor() -> None:
    with pytest.raises(MasterDataError) as info:
        Invoice810Mapping().map(one_set("810.x12"), ctx())
    assert info.value.kind == "vendor" and info.value.key == "ACMEMED" and info.value.position.field == "ISA06"


def test_832_catalog_items() -> None:
    items = Catalog832Mapping().map(one_set("832.x12"), ctx({"vendor": {"ACMEMED": "V100"},
                                                              "item": {"AC-55-10": "ITM-1001"}}))
    assert all(isinstance(i, Item) for i in items)
    a, b = items
    assert (a.item_code, a.erp_item, a.gtin, a.unit_price, a.unit, a.manufacturer) == (
        "ITM-1001", "ITM-1001", "012345678905", Decimal("12.5"), "BX", "GAUZECO")
    assert (b.item_code, b.erp_item, b.vendor_part) == ("V100:AC-88-30", None, "AC-88-30")


def test_a_set_the_channel_does_not_map_is_a_mapping_failure() -> None:
    with pytest.raises(MappingError) as info:
        Claim837Mapping().map(one_set("850.x12"), ctx())
    assert "850" in info.value.reason and info.value.position.field == "ST01"


def test_loops_group_by_start_segment() -> None:
    segs = list(enumerate([["ST"], ["PO1", "1"], ["PID"], ["PO1", "2"], ["CTT", "2"], ["SE"]], start=1))
    assert [[s[0] for _, s in loop] for loop in loops(segs, "PO1", stop=("CTT",))] == [["PO1", "PID"], ["PO1"]]


def test_errors_name_segment_ordinal_and_element() -> None:
    text = sample("835.x12").replace(b"*225.00*185.00*", b"*225.00*18X.00*", 1)
    (msg,) = [m for m in parse(text) if m.type == "835"]
    assert msg.error is not None
    pos = msg.error.position
    assert (pos.segment, pos.field, pos.control) == ("CLP", "CLP04", "000001003/1003/0001")
    assert msg.data is None and pos.segment_index == 11  # ST is 1
