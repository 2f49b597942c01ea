"""DFT^P03 (HL7 v2.5.1 chapter 6.4.3, post detail financial transaction) -> Charge, one per FT1.

Each FT1 becomes one :class:`~mappings.canonical.Charge`:

- transaction id FT1-2 (when empty: MSH-10 plus FT1-1, the set id), type
  FT1-6 (HL7 table 0017: CG charge, CD credit, PY payment, AJ adjustment),
  transaction date FT1-4.1, posting date FT1-5, charge code and description
  FT1-7.1/FT1-7.2 (or FT1-8), quantity FT1-10, extended amount FT1-11.1.1,
  unit amount FT1-12.1.1;
- department FT1-13.1, through the ``department`` crosswalk to the cost
  center; performing and ordering provider FT1-20.1 and FT1-21.1;
- account number PID-18.1, visit number PV1-19.1, MRN PID-3 (the MR
  repetition);
- the implant or supply item FT1-29.1 (or ``item_field``, which may name a
  Z-segment following the FT1, ``ZFT-2.1``) through the ``item`` crosswalk,
  which links the supply's cost to the charge.

Netting: a credit (``credit_types``, default CD) is negative whatever sign the
sender used; a reversal sent as a charge with a negative quantity or amount
stays negative in both. So summing ``amount`` over a visit nets correctly.

The natural key is ``sender:transaction_id``: a resend of the same FT1
upserts. A resend of the whole message (same MSH-10 from the same sender)
is stopped before mapping by the pipeline's ``message_keys`` check.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import Field

from bridge.errors import InputError, MappingError, Position
from mappings.base import Mapping, MappingConfig, MappingContext, Output
from mappings.canonical import Charge
from mappings.hl7_common import hl7_datetime, hl7_decimal, hl7_message, mrn, value_near
from parsers.base import Message
from parsers.hl7 import parse_ref

__all__ = ["DftP03Mapping", "DftP03MappingConfig"]

#: the FT1 positions read, in one :meth:`~parsers.hl7.Segment.values` call per FT1:
#: set id, transaction id, transaction date, posting date, type, code, description (FT1-7.2, FT1-8),
#: quantity, extended and unit amount (CP: MO.1), department, performing and ordering provider
_FT1_REFS: tuple[tuple[int, int, int], ...] = (
    (1, 1, 1), (2, 1, 1), (4, 1, 1), (5, 1, 1), (6, 1, 1), (7, 1, 1), (7, 2, 1), (8, 1, 1), (10, 1, 1),
    (11, 1, 1), (12, 1, 1), (13, 1, 1), (20, 1, 1), (21, 1, 1),
)

#: where the values of one FT1 raise their errors: no position yet, :meth:`DftP03Mapping.map` adds the FT1's
_HERE = Position()


class DftP03MappingConfig(MappingConfig):
    #: the sender's time zone, for date-times without an offset
    timezone: str = "UTC"
    #: FT1-6 codes that are credits (negated); HL7 table 0017 has CD
    credit_types: list[str] = Field(default_factory=lambda: ["CD"])
    #: where the implant/supply item is: an FT1 field or a Z-segment after the FT1
    item_field: str = "FT1-29.1"
    #: the department -> cost center crosswalk is required for every FT1 with a department
    require_department: bool = False
    #: message types accepted (others are reported as unmapped)
    message_types: list[str] = Field(default_factory=lambda: ["DFT^P03"])


class DftP03Mapping(Mapping):
    """DFT^P03 detail financial transactions to Charge records, one per FT1."""

    Config = DftP03MappingConfig
    config: DftP03MappingConfig

    def map(self, message: Message, ctx: MappingContext) -> Sequence[Output]:
        cfg = self.config
        msg = hl7_message(message, tuple(cfg.message_types), "hl7_dft_p03")
        ft1s = msg.segments("FT1")
        if not ft1s:
            raise MappingError("DFT^P03 has no FT1 segment", message.position.with_(segment="FT1"))
        sender = msg.sender
        control = msg.control_id
        pid = msg.segment("PID")
        pv1 = msg.segment("PV1")
        account = (pid.value(18) if pid else "") or None
        visit = (pv1.value(19) if pv1 else "") or None
        patient = mrn(msg)
        credits = {c.upper() for c in cfg.credit_types}
        item_sid, _ordinal, item_number, item_comp, item_sub = parse_ref(cfg.item_field)
        refs = _FT1_REFS + (((item_number, item_comp, item_sub),) if item_sid == "FT1" else ())
        out: list[Output] = []
        # an error is raised at _HERE (its field only) and placed at its FT1 below: building each FT1's
        # position up front, for values that are nearly always good, cost more than reading them
        pos = _HERE
        for ft1 in ft1s:
            try:
                (set_id, txn_id, txn_date, post_date, ttype, code, desc, name, qty_raw, amount_raw, unit_raw,
                 department, performing, ordering, *item_value) = ft1.values(refs)
                txn_id = txn_id or f"{control}-{set_id or ft1.ordinal}"
                ttype = ttype.upper()
                if not ttype:
                    raise MappingError("FT1-6 (transaction type) is empty", ft1.position(6))
                if not code:
                    raise MappingError("FT1-7 (transaction code) is empty", ft1.position(7))
                description = desc or name or None
                qty = hl7_decimal(qty_raw, field="FT1-10", position=pos)
                if qty is None:
                    qty = Decimal(1)
                amount = hl7_decimal(amount_raw, field="FT1-11", position=pos)
                unit_amount = hl7_decimal(unit_raw, field="FT1-12", position=pos)
                negative = ttype in credits or qty < 0 or (amount is not None and amount < 0)
                sign = -1 if negative else 1
                qty = sign * abs(qty)
                if amount is not None:
                    amount = sign * abs(amount)
                elif unit_amount is not None:
                    amount = qty * abs(unit_amount)
                cost_center = None
                if department:
                    cost_center = ctx.crosswalks.lookup("department", department, position=pos, field="FT1-13")
                elif cfg.require_department:
                    raise MappingError("FT1-13 (department) is empty", ft1.position(13))
                source_item = (item_value[0] if item_value else value_near(msg, ft1, cfg.item_field)) or None
                item = None
                if source_item:
                    item = ctx.crosswalks.lookup("item", source_item, position=pos, field=cfg.item_field)
                # every value is typed above (str, Decimal, aware UTC datetime): no second validation
                out.append(Charge.trusted(
                    transaction_id=txn_id,
                    sender=sender,
                    transaction_type=ttype,
                    transaction_date=hl7_datetime(txn_date, tz=cfg.timezone, field="FT1-4", position=pos),
                    posting_date=hl7_datetime(post_date, tz=cfg.timezone, field="FT1-5", position=pos),
                    charge_code=code,
                    charge_description=description,
                    quantity=qty,
                    amount=amount,
                    unit_amount=abs(unit_amount) if unit_amount is not None else None,
                    department=department or None,
                    cost_center=cost_center,
                    performing_provider=performing or None,
                    ordering_provider=ordering or None,
                    account_number=account,
                    visit_number=visit,
                    mrn=patient,
                    item=item,
                    source_item=source_item,
                    control_id=control or None,
                    source_channel=ctx.channel,
                ))
            except InputError as exc:
                raise exc.at(ft1.position()) from None
        return out
