"""X12 810 invoice -> Invoice (4010/5010).

BIG01 invoice date, BIG02 invoice number, BIG04 PO number; CUR02 currency;
per IT1 loop a line: IT101 line (the PO line), IT102 quantity, IT103 unit,
IT104 unit price, BP/VP pairs from IT106, PID*F description; TDS01 the total
(type N2: two implied decimals, so ``12345`` is 123.45); SAC allowances (SAC01
``A``) and charges (``C``) with SAC05 amounts (N2); TXI02 tax.

The vendor must be known to post an invoice: the ``vendor`` crosswalk entry
for ISA06 is required (``require_vendor``, a ``master_data`` failure
otherwise, reprocessed once the entry exists). Items: IT1 BP as sent, else
the ``item`` crosswalk entry for VP when there is one (informative).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from bridge.errors import MappingError
from mappings.base import MappingContext, Output
from mappings.canonical import Invoice, InvoiceLine
from mappings.x12_common import X12Mapping, X12MappingConfig, d8, el, money, pairs, vendor_of
from parsers.base import Message
from parsers.x12.model import TransactionSet
from parsers.x12.sets import loops

__all__ = ["Invoice810Mapping", "Invoice810MappingConfig"]

_CENT = Decimal("0.01")


class Invoice810MappingConfig(X12MappingConfig):
    require_vendor: bool = True


def _n2(seg: list[str], i: int, message: Message, p: int) -> Decimal | None:
    raw = money(seg, i, message.position.with_(segment=seg[0], segment_index=p), required=False)
    return None if raw is None else (raw * _CENT if "." not in el(seg, i) else raw)


class Invoice810Mapping(X12Mapping):
    """810 invoices with IT1 lines, TDS total and SAC allowances/charges."""

    Config = Invoice810MappingConfig
    config: Invoice810MappingConfig
    sets = ("810",)

    def map_set(self, tset: TransactionSet, message: Message, ctx: MappingContext) -> Sequence[Output]:
        big = tset.first("BIG")
        tds = tset.first("TDS")
        if big is None or tds is None:
            raise MappingError("810 needs BIG and TDS", message.position.with_(segment="BIG" if big is None else "TDS"))
        bpos = message.position.with_(segment="BIG", segment_index=big[0])
        invoice_date = d8(el(big[1], 1), bpos, "BIG01")
        if invoice_date is None:
            raise MappingError("BIG01 is empty", bpos.with_(field="BIG01"))
        total = _n2(tds[1], 1, message, tds[0])
        assert total is not None
        segs = list(enumerate(tset.segments, start=1))
        currency = "USD"
        tax = allowances = charges = None
        for p, seg in segs:
            if seg[0] == "CUR" and el(seg, 2):
                currency = el(seg, 2)
            elif seg[0] == "TXI":
                tax = (tax or Decimal(0)) + (money(seg, 2, message.position.with_(segment="TXI", segment_index=p),
                                                   required=False) or Decimal(0))
            elif seg[0] == "SAC":
                amount = _n2(seg, 5, message, p) or Decimal(0)
                if el(seg, 1) == "A":
                    allowances = (allowances or Decimal(0)) + amount
                elif el(seg, 1) == "C":
                    charges = (charges or Decimal(0)) + amount
        lines = []
        for loop in loops(segs, "IT1", stop=("TDS", "SE")):
            p, it1 = loop[0]
            pos = message.position.with_(segment="IT1", segment_index=p)
            ids = pairs(it1, 6)
            vp = ids.get("VP")
            qty = money(it1, 2, pos)
            price = money(it1, 4, pos)
            assert qty is not None and price is not None
            desc = next((el(s, 5) for _, s in loop[1:] if s[0] == "PID" and el(s, 5)), None)
            lines.append(InvoiceLine(line_number=el(it1, 1) or str(p),
                                     item=ids.get("BP") or (ctx.crosswalks.find("item", vp) if vp else None),
                                     vendor_part=vp, description=desc, quantity=qty, unit=el(it1, 3) or None,
                                     unit_price=price, amount=qty * price, po_line=el(it1, 1) or None))
        return [Invoice(
            invoice_number=el(big[1], 2), vendor=vendor_of(tset, ctx, bpos, required=self.config.require_vendor),
            invoice_date=invoice_date, po_number=el(big[1], 4) or None, currency=currency, total=total, tax=tax,
            allowances=allowances, charges=charges, lines=lines, source_channel=ctx.channel,
        )]
