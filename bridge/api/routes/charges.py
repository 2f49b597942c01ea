"""``/v1/charges``: post a charge that goes to the legacy billing engine as an HL7 DFT^P03, and see its ACK.

**Post** (``POST``, scope ``charges:write``; ``Idempotency-Key`` optional,
:mod:`bridge.api.idempotency`): the department is checked against the
``department`` crosswalk (its ERP cost center is stored beside it) and, when
given, the item against the ``item`` crosswalk. Then, in ONE transaction: the
:class:`~mappings.canonical.Charge` record (sender ``api:<client name>``, so
natural key ``api:<client>:<transaction_id>``; event ``billing.charge.recorded``)
and an outbox event ``billing.charge.dft_p03.created`` whose ``data`` carries
the DFT^P03 built by :func:`parsers.hl7_write.build_dft_p03` (HL7 v2.5.1
chapter 6.4.3) as ``content`` with a ``filename`` and the MSH-10
``control_id``. The relay delivers it to whichever destination subscribes
(a folder or SFTP drop the billing engine polls, or an MLLP sender). The
message holds patient identifiers, so the event's ``data`` is marked
``phi: true`` and the event feed masks its content without ``phi:read``.
A transaction id this client already posted is a 409.

**Status** (``GET /{id}``, ``records:read``): the charge (PHI masked without
``phi:read``) and the DFT's delivery: ``queued`` until a destination took it,
``delivered``, or ``dead``; with the HL7 ACK's MSA-1 code (AA/AE/AR, HL7 table
0008) when the destination recorded the billing engine's answer as the
attempt's response (an MLLP exchange does; a file drop has no answer).
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Connection, select

from bridge.api.deps import DbDep, RecordsReader, current_client
from bridge.api.idempotency import create_once
from bridge.api.keys import Client
from bridge.api.phi import mask_record
from bridge.api.problems import Problem, responses
from bridge.api.routes.purchase_orders import Code, decimal_schema, validate_codes
from bridge.db import Database
from bridge.db.tables import deliveries, delivery_attempts, events, records
from bridge.logging import current_correlation_id
from mappings.base import EventDraft
from mappings.canonical import Charge
from outbox.writer import Origin, new_event_id, write_records
from parsers.hl7_write import build_dft_p03

__all__ = ["ChargeCreate", "ChargePublic", "router"]

router = APIRouter(prefix="/charges", tags=["charges"])

ChargesWriter = Annotated[Client, Security(current_client, scopes=["charges:write"])]
EVENT_DFT = "billing.charge.dft_p03.created"
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class ChargeCreate(BaseModel):
    """A charge to post to the billing engine (becomes FT1 of a DFT^P03)."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "transaction_id": "CHG-000123", "transaction_type": "CG", "charge_code": "270-SUT-0001",
        "charge_description": "SUTURE 3-0", "quantity": "2", "amount": "31.50", "department": "ICU",
        "visit_number": "V0000001", "mrn": "MRN00001", "transaction_date": "2026-11-26T08:30:00Z"}]}}

    transaction_id: Ident = Field(description="FT1-2; unique per client")
    transaction_type: Literal["CG", "CD", "PY", "AJ"] = Field("CG", description="HL7 table 0017")
    transaction_date: AwareDatetime | None = None
    posting_date: date | None = None
    charge_code: Code = Field(description="FT1-7 (chargemaster code)")
    charge_description: str | None = Field(None, max_length=120)
    quantity: Annotated[Decimal, Field(gt=0, le=Decimal("99999"), decimal_places=4),
                        decimal_schema(places=4, le="99999", gt="0")]
    amount: Annotated[Decimal, Field(ge=Decimal("-99999999"), le=Decimal("99999999"), decimal_places=2),
                      decimal_schema(places=2, le="99999999", ge="-99999999")] | None = None
    unit_amount: Annotated[Decimal, Field(ge=0, le=Decimal("99999999"), decimal_places=2),
                           decimal_schema(places=2, le="99999999", ge="0")] | None = None
    department: Code = Field(description="department or cost center (department crosswalk); FT1-13")
    item: Code | None = Field(None, description="supply item (item crosswalk), when the charge is for one")
    performing_provider: Ident | None = None
    ordering_provider: Ident | None = None
    account_number: Ident | None = Field(None, description="PHI: PID-18")
    visit_number: Ident | None = Field(None, description="PHI: PV1-19")
    mrn: Ident | None = Field(None, description="PHI: PID-3")


class ChargePublic(BaseModel):
    id: int = Field(description="the charge record's id")
    transaction_id: str
    status: Literal["queued", "delivered", "dead"]
    control_id: str | None = Field(None, description="MSH-10 of the DFT^P03 sent")
    ack_code: Literal["AA", "AE", "AR", "CA", "CE", "CR"] | None = Field(
        None, description="MSA-1 of the billing engine's ACK, when the destination returns one")
    destinations: list[dict[str, Any]] = Field(default_factory=list,
                                               description="per destination: status, attempts, delivered_at")
    charge: dict[str, Any] = Field(description="the stored Charge; PHI fields '***' without phi:read")
    correlation_id: str | None = None


_MSA = re.compile(r"(?:^|\r|\n)MSA\|(AA|AE|AR|CA|CE|CR)\b")


def _public(db: Database, conn: Any, record_id: int, client: Client) -> ChargePublic:
    row = conn.execute(select(records).where(records.c.id == record_id, records.c.type == Charge.record_type)).first()
    if row is None:
        raise Problem(404, f"no charge with id {record_id}", slug="not-found", title="Not found")
    data = orjson.loads(row.data)
    ev = conn.execute(select(events.c.seq, events.c.payload)
                      .where(events.c.event_type == EVENT_DFT, events.c.aggregate_type == Charge.aggregate_type,
                             events.c.aggregate_id == Charge.model_validate(data).aggregate_id()[:255])
                      .order_by(events.c.seq.desc())).all()
    mine = [(e.seq, orjson.loads(e.payload).get("data", {})) for e in ev]
    mine = [(seq, d) for seq, d in mine if d.get("charge_key") == row.natural_key][:1]
    status, control, ack, dests = "queued", None, None, []
    if mine:
        seq, d = mine[0]
        control = d.get("control_id")
        for dl in conn.execute(select(deliveries).where(deliveries.c.event_seq == seq)
                               .order_by(deliveries.c.id)).all():
            dests.append({"destination": dl.destination, "status": dl.status, "attempts": dl.attempts,
                          "delivered_at": dl.delivered_at, "last_error": dl.last_error})
            last = conn.execute(select(delivery_attempts.c.response).where(delivery_attempts.c.delivery_id == dl.id)
                                .order_by(delivery_attempts.c.id.desc())).first()
            if last is not None and last.response:
                m = _MSA.search(last.response)
                ack = m.group(1) if m else ack
        if any(x["status"] == "delivered" for x in dests):
            status = "delivered"
        elif dests and all(x["status"] == "dead" for x in dests):
            status = "dead"
    return ChargePublic(id=row.id, transaction_id=data["transaction_id"], status=status,  # type: ignore[arg-type]
                        control_id=control, ack_code=ack, destinations=dests,
                        charge=mask_record(Charge.record_type, data, client), correlation_id=row.correlation_id)


@router.post("", status_code=201, response_model=ChargePublic, summary="Post a charge",
             description="Validates the department (and item) against the crosswalks, stores the Charge and "
                         "queues an HL7 DFT^P03 for the billing engine in one transaction. An `Idempotency-Key` "
                         "makes retries safe; posting a transaction id twice is a 409. Needs `charges:write`.",
             responses=responses(401, 403, 409, 422, 429))
def post_charge(
    request: Request,
    body: ChargeCreate,
    client: ChargesWriter,
    db: DbDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                  pattern=r"^[A-Za-z0-9._:-]+$",
                                                  description="optional; a retry with the same key and body "
                                                              "returns the first response")] = None,
) -> JSONResponse:
    correlation_id = current_correlation_id()

    def create(conn: Connection) -> dict[str, Any]:
        wanted = [("department", body.department, "department")]
        if body.item:
            wanted.append(("item", body.item, "item"))
        found, errors = validate_codes(conn, wanted)
        if errors:
            raise Problem(422, f"body field {errors[0]['name']!r}: {errors[0]['message']}",
                          slug="unknown-master-data", title="Unknown master data", extra={"errors": errors})
        charge = Charge(
            transaction_id=body.transaction_id, sender=f"api:{client.name}",
            transaction_type=body.transaction_type, transaction_date=body.transaction_date,
            posting_date=body.posting_date, charge_code=body.charge_code,
            charge_description=body.charge_description, quantity=body.quantity, amount=body.amount,
            unit_amount=body.unit_amount, department=body.department,
            cost_center=found[("department", body.department)],
            performing_provider=body.performing_provider, ordering_provider=body.ordering_provider,
            account_number=body.account_number, visit_number=body.visit_number, mrn=body.mrn,
            item=found[("item", body.item)] if body.item else None, source_item=body.item,
            source_channel="api")
        if conn.execute(select(records.c.id).where(records.c.type == Charge.record_type,
                                                   records.c.natural_key == charge.natural_key())).first():
            raise Problem(409, f"transaction {body.transaction_id!r} was already posted by this client",
                          slug="charge-exists", title="Charge exists")
        control_id = new_event_id().replace("-", "")[:20]
        message = build_dft_p03(charge, control_id=control_id)
        draft = EventDraft(EVENT_DFT, Charge.aggregate_type, charge.aggregate_id(), {
            "filename": f"DFT_P03_{control_id}.hl7", "content": message, "kind": "DFT^P03",
            "control_id": control_id, "charge_key": charge.natural_key(), "phi": True})
        origin = Origin(channel="api", correlation_id=correlation_id)
        write_records(db, conn, [(charge, origin)], drafts=[(draft, origin)])
        rid = conn.execute(select(records.c.id).where(records.c.type == Charge.record_type,
                                                      records.c.natural_key == charge.natural_key())).scalar_one()
        content: dict[str, Any] = jsonable_encoder(_public(db, conn, rid, client))
        return content

    return create_once(db, client.id, idempotency_key, body, create, collection=request.url.path,
                       conflict=Problem(409, f"transaction {body.transaction_id!r} was posted concurrently",
                                        slug="charge-exists", title="Charge exists"))


@router.get("/{id}", response_model=ChargePublic, summary="A charge and its DFT^P03 delivery",
            description="The stored charge (PHI masked without `phi:read`), whether the DFT^P03 was delivered, "
                        "and the billing engine's ACK code when the destination returns one. Needs `records:read`.",
            responses=responses(401, 403, 404, 422, 429))
def get_charge(
    id: Annotated[int, Path(ge=1, le=2**62, description="the charge record's id", examples=[42])],
    client: RecordsReader,
    db: DbDep,
) -> ChargePublic:
    with db.read() as conn:
        return _public(db, conn, id, client)
