"""A vendor's 997/999 for the 850 of a PO created through the API moves the PO to ``accepted`` or ``rejected``.

End to end through the real pipeline: the PO is created with ``POST
/v1/purchase-orders``; the vendor's functional acknowledgment of the group
that carried its 850 is landed as a file on the partner's inbound channel
(mapping ``x12_999``) and processed; the PO's status, its timeline and the
``edi.functional_ack.received`` event are then read back through the API. The
vendor's ack is rendered by the X12 ack writer from the 850 bridge queued (as a
vendor's translator would), so it names our group control number; a
rejection comes from an 850 whose SE01 count was damaged on the way (X12
AK5/IK5 code 4: number of included segments does not match actual count).
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.pipeline.land import Archive, land
from bridge.pipeline.process import Processor, build_channel
from bridge.settings import ChannelConfig, Settings
from parsers.x12 import X12Parser
from parsers.x12.acks import build_acks
from tests.api.conftest import auth
from tests.api.test_purchase_orders import PARTNER, PO, _post, seed_master_data

INBOUND = "acme_in"


def vendor_ack(our_850: str, *, damaged: bool) -> tuple[str, str]:
    """(kind, content) of the functional ack the vendor's translator sends for ``our_850``."""
    if damaged:
        our_850 = re.sub(r"SE\*(\d+)\*", lambda m: f"SE*{int(m.group(1)) + 5}*", our_850)
    report = list(X12Parser().parse(io.BytesIO(our_850.encode()), name="850.x12"))[-1].data
    numbers = count(500)
    (ack,) = build_acks(report, next_control=lambda _kind: next(numbers), now=datetime.now(UTC), ta1="never")
    return ack.kind, ack.content


@pytest.mark.parametrize(("version", "kind", "verdict"), [("00401", "997", "accepted"), ("00501", "999", "rejected")])
def test_a_vendors_functional_ack_moves_the_po_and_is_on_the_feed(db: Database, tmp_path: Path, version: str,
                                                                  kind: str, verdict: str) -> None:
    seed_master_data(db)
    settings = Settings.model_validate({"data_dir": str(tmp_path / "var"),
                                        "partners": {"acme": {**PARTNER, "version": version}}})
    _, buyer = create_client(db, "buyer", ["purchase-orders:write", "records:read", "events:read"])
    channel = ChannelConfig.model_validate({
        "source": {"type": "folder", "path": str(tmp_path / "drop")}, "parser": {"type": "x12"},
        "mapping": {"type": "x12_999", "acks": {"partner": "acme"}}})
    archive = Archive(tmp_path / "archive")
    processor = Processor(db, archive, {INBOUND: build_channel(INBOUND, channel)})

    with TestClient(create_app(settings, db)) as api:
        created = _post(api, buyer, PO, "po-ack-1")
        assert created.status_code == 201, created.text
        po = created.json()
        assert po["status"] == "created"
        (queued,) = api.get("/v1/events", params={"type": "purchase_order.x12_850.created"},
                            headers=auth(buyer)).json()["items"]
        got_kind, content = vendor_ack(queued["payload"]["data"]["content"], damaged=verdict == "rejected")
        assert got_kind == kind  # 4010 is answered with a 997, 5010 with a 999

        landed = land(db, archive, channel=INBOUND, src=io.BytesIO(content.encode()), name=f"{kind}.x12")
        result = processor.process(landed.inbound_id)
        assert result is not None and result.status == "processed" and result.failures == 0

        status = api.get(f"/v1/purchase-orders/{po['id']}", headers=auth(buyer)).json()
        assert status["status"] == verdict
        assert [t["status"] for t in status["timeline"]] == ["created", verdict]
        assert status["timeline"][-1]["detail"] == {"ack": kind, "code": "A" if verdict == "accepted" else "R"}
        (ack_event,) = api.get("/v1/events", params={"type": "edi.functional_ack.received"},
                               headers=auth(buyer)).json()["items"]
        data = ack_event["payload"]["data"]
        assert (data["partner"], data["kind"], data["interchange_control"]) == ("acme", kind, po["interchange_control"])
        assert data["status"] == ("A" if verdict == "accepted" else "R")
        assert data["sets"][0]["set"] == "850"
        assert ack_event["inbound_id"] == landed.inbound_id
