"""Per-client token buckets: 429 problem with Retry-After; the settings default applies to clients without a limit."""

from __future__ import annotations

import multiprocessing

from fastapi.testclient import TestClient

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.api.ratelimit import BucketTable, RateLimiter
from bridge.db import Database
from bridge.settings import Settings
from tests.api.conftest import assert_problem, auth


def test_client_over_its_limit_gets_429_with_retry_after(api: TestClient, db: Database) -> None:
    _, slow = create_client(db, "slow", ["records:read"], rate_limit_per_minute=3)
    _, other = create_client(db, "other", ["records:read"], rate_limit_per_minute=3)
    for _ in range(3):
        assert api.get("/v1/records/items", headers=auth(slow)).status_code == 200
    resp = api.get("/v1/records/items", headers=auth(slow))
    body = assert_problem(resp, 429)
    assert body["type"] == "urn:bridge:problem:rate-limited"
    assert "'slow'" in body["detail"] and "3 requests per minute" in body["detail"]
    # one token refills in 60/3 = 20 s
    assert 1 <= int(resp.headers["retry-after"]) <= 20
    assert body["retry_after"] == int(resp.headers["retry-after"])
    # buckets are per client
    assert api.get("/v1/records/items", headers=auth(other)).status_code == 200


def test_settings_default_applies_to_clients_without_a_limit(db: Database, tmp_path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path / "var"), "api": {"rate_limit_per_minute": 2}})
    _, key = create_client(db, "erp", ["records:read"])
    with TestClient(create_app(settings, db)) as api:
        assert api.get("/v1/records/items", headers=auth(key)).status_code == 200
        assert api.get("/v1/records/items", headers=auth(key)).status_code == 200
        assert_problem(api.get("/v1/records/items", headers=auth(key)), 429)
        # unauthenticated requests never reach the bucket: still 401, not 429
        assert_problem(api.get("/v1/records/items"), 401)


def test_bucket_refills_at_limit_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(None, clock=lambda: now[0])
    assert limiter.take(1, None) is None  # no limit anywhere: unlimited
    assert [limiter.take(2, 60) for _ in range(60)] == [None] * 60
    assert limiter.take(2, 60) == 1.0  # one per second
    now[0] += 0.5
    assert limiter.take(2, 60) == 0.5
    now[0] += 0.5
    assert limiter.take(2, 60) is None
    now[0] += 3600  # refills up to the burst size only
    assert [limiter.take(2, 60) for _ in range(61)].count(None) == 60


def _drain(buckets: BucketTable, client_id: int, limit: int) -> None:
    """In another process: take every token of ``client_id``'s bucket."""
    limiter = RateLimiter(None, buckets=buckets)
    assert [limiter.take(client_id, limit) for _ in range(limit)] == [None] * limit


def test_shared_buckets_hold_the_limit_across_processes() -> None:
    buckets = BucketTable.shared()
    worker = multiprocessing.get_context("spawn").Process(target=_drain, args=(buckets, 7, 5))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    limiter = RateLimiter(None, buckets=buckets)
    wait = limiter.take(7, 5)  # the other process took all 5 of this minute
    assert wait is not None and 0 < wait <= 12
    assert limiter.take(8, 5) is None  # another client's bucket is its own


def test_a_full_table_gives_the_stalest_clients_slot_to_a_new_client() -> None:
    now = [0.0]
    limiter = RateLimiter(None, clock=lambda: now[0], buckets=BucketTable.local(slots=2))
    assert limiter.take(1, 1) is None  # client 1 last seen at 0
    now[0] += 1
    assert limiter.take(2, 1) is None
    assert limiter.take(2, 1) is not None  # client 2 last seen at 1, its bucket empty
    now[0] += 1
    assert limiter.take(3, 1) is None  # takes over client 1's slot, the stalest ...
    assert limiter.take(2, 1) is not None  # ... and client 2 keeps its empty bucket
