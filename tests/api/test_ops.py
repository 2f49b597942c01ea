"""GET /v1/inbound and /v1/failures: files with their status, failures with category and position."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import CHANNEL, HEADER, assert_problem, auth, csv_rows

BAD_ROWS = (HEADER + "2026-11-26 08:00:00,100234,1,EA,ICU,issue,\n"
            "2026-11-26 08:00:01,999999,1,EA,ICU,issue,\n"        # unknown item: master_data
            "2026-11-26 08:00:02,100234,-4,EA,ICU,issue,\n").encode()  # negative issue: mapping


def test_inbound_lists_files_newest_first_with_status(api: TestClient, keys: dict[str, str], ingest) -> None:
    good = ingest(csv_rows(2), "good.csv")
    partial = ingest(BAD_ROWS, "partial.csv")
    key = auth(keys["reader"])
    body = api.get("/v1/inbound", headers=key).json()
    assert [(f["id"], f["name"], f["status"]) for f in body["items"]] == [
        (partial.inbound_id, "partial.csv", "partial"), (good.inbound_id, "good.csv", "processed")]
    assert body["items"][0]["failure_count"] == 2 and body["items"][0]["record_count"] == 1
    assert body["items"][1]["channel"] == CHANNEL and len(body["items"][1]["sha256"]) == 64
    only = api.get("/v1/inbound", params={"status": "processed"}, headers=key).json()["items"]
    assert [f["id"] for f in only] == [good.inbound_id]
    assert api.get("/v1/inbound", params={"channel": "nope"}, headers=key).json()["items"] == []
    # paging: one per page, newest first, then the end
    page = api.get("/v1/inbound", params={"limit": 1}, headers=key).json()
    assert page["items"][0]["id"] == partial.inbound_id and page["next_cursor"]
    page2 = api.get("/v1/inbound", params={"limit": 1, "after": page["next_cursor"]}, headers=key).json()
    assert page2["items"][0]["id"] == good.inbound_id and page2["next_cursor"] is None
    assert_problem(api.get("/v1/inbound", params={"status": "bogus"}, headers=key), 422)


def test_inbound_detail_carries_its_failures(api: TestClient, keys: dict[str, str], ingest) -> None:
    partial = ingest(BAD_ROWS, "partial.csv")
    detail = api.get(f"/v1/inbound/{partial.inbound_id}", headers=auth(keys["reader"])).json()
    assert detail["status"] == "partial" and detail["message_count"] == 3
    assert [(f["message_index"], f["category"]) for f in detail["failures"]] == [(1, "master_data"), (2, "mapping")]
    assert_problem(api.get("/v1/inbound/424242", headers=auth(keys["reader"])), 404)


def test_failures_listing_filters_and_detail(api: TestClient, keys: dict[str, str], ingest) -> None:
    partial = ingest(BAD_ROWS, "partial.csv")
    key = auth(keys["reader"])
    items = api.get("/v1/failures", headers=key).json()["items"]
    assert len(items) == 2
    master = api.get("/v1/failures", params={"category": "master_data"}, headers=key).json()["items"]
    assert len(master) == 1
    f = master[0]
    assert f["inbound_id"] == partial.inbound_id and f["channel"] == CHANNEL and f["status"] == "open"
    assert f["kind"] == "item" and f["key"] == "999999"
    assert f["position"]["file"] == "partial.csv" and f["position"]["line"] == 3
    assert f["position"]["field"] == "item"
    mapping = api.get("/v1/failures", params={"category": "mapping", "channel": CHANNEL, "status": "open"},
                      headers=key).json()["items"]
    assert len(mapping) == 1 and "negative" in mapping[0]["reason"]
    assert api.get("/v1/failures", params={"status": "resolved"}, headers=key).json()["items"] == []
    assert api.get(f"/v1/failures/{f['id']}", headers=key).json() == f
    assert_problem(api.get("/v1/failures/424242", headers=key), 404)
    body = assert_problem(api.get("/v1/failures", params={"category": "typo"}, headers=key), 422)
    assert body["errors"][0]["name"] == "category"
    # ops:* grants ops:read
    assert len(api.get("/v1/failures", headers=auth(keys["ops_star"])).json()["items"]) == 2
