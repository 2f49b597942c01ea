"""POST /v1/cxml/{channel}: the body lands on the channel and the sender gets a cXML Response."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import select

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.db.tables import inbound_files
from bridge.settings import Settings
from parsers.xml import safe_parser
from tests.xml.conftest import XML_SAMPLES, Canary
from tests.xml.test_storage import CXML_CHANNEL


@pytest.fixture
def api(db: Database, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings.model_validate({"data_dir": str(tmp_path / "var"),
                                        "channels": {"supplier-net": CXML_CHANNEL}})
    key = create_client(db, "network", ["cxml:write"])[1]
    with TestClient(create_app(settings, db)) as client:
        yield client, {"X-API-Key": key, "Content-Type": "text/xml"}


def status_of(body: bytes) -> tuple[str, str, str]:
    status = etree.fromstring(body, safe_parser()).find("Response/Status")
    return status.get("code"), status.get("text"), (status.text or "")


def landed(db: Database) -> list[tuple[str, str]]:
    with db.read() as conn:
        return [(r.channel, r.status) for r in conn.execute(select(inbound_files).order_by(inbound_files.c.id))]


def test_a_posted_order_request_lands_and_is_answered_200(db: Database, api: tuple[TestClient, dict]) -> None:
    client, headers = api
    doc = (XML_SAMPLES / "order_request.xml").read_bytes()
    res = client.post("/v1/cxml/supplier-net", content=doc, headers=headers)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/xml")
    assert status_of(res.content)[:2] == ("200", "OK")
    again = client.post("/v1/cxml/supplier-net", content=doc, headers=headers)
    assert status_of(again.content)[0] == "200"
    assert landed(db) == [("supplier-net", "landed"), ("supplier-net", "duplicate")]


def test_a_malformed_document_is_answered_400_with_line_and_column(db: Database,
                                                                   api: tuple[TestClient, dict]) -> None:
    client, headers = api
    res = client.post("/v1/cxml/supplier-net", content=(XML_SAMPLES / "malformed.xml").read_bytes(),
                      headers=headers)
    code, text, reason = status_of(res.content)
    assert (res.status_code, code, text) == (400, "400", "Bad Request")
    assert "line 9" in reason and "column" in reason
    assert landed(db) == [("supplier-net", "landed")]  # kept with its bytes for the operator


def test_xxe_posted_to_the_api_reads_nothing(db: Database, api: tuple[TestClient, dict], tmp_path: Path,
                                             canary: Canary) -> None:
    client, headers = api
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-FILE-CONTENT-7731")
    for target in (f"file://{secret}", f"{canary.url}/x"):
        doc = (f'<!DOCTYPE cXML [<!ENTITY x SYSTEM "{target}">]><cXML payloadID="e@x"><Header/><Request>'
               f'<OrderRequest><OrderRequestHeader orderID="P"><Comments>&x;</Comments></OrderRequestHeader>'
               f'</OrderRequest></Request></cXML>').encode()
        res = client.post("/v1/cxml/supplier-net", content=doc, headers=headers)
        assert status_of(res.content)[0] == "400"
        assert b"SECRET-FILE-CONTENT" not in res.content and b"CANARY-CONTENT" not in res.content
    assert canary.hits == []


def test_unknown_channel_and_missing_key(api: tuple[TestClient, dict]) -> None:
    client, headers = api
    res = client.post("/v1/cxml/nowhere", content=b"<cXML/>", headers=headers)
    assert res.status_code == 404 and status_of(res.content)[0] == "404"
    res = client.post("/v1/cxml/supplier-net", content=b"<cXML/>", headers={"Content-Type": "text/xml"})
    assert res.status_code == 401
