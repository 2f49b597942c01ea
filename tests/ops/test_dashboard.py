"""The dashboard figures and the console over HTTP (without a browser), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from bridge import ops
from bridge.api.app import create_app
from bridge.db import Database, utcnow
from bridge.db.tables import audit_log, deliveries, events, inbound_files
from bridge.settings import Settings
from tests.ops.conftest import CHANNEL, rows


def _settings(base: Settings, **sla: float) -> Settings:
    data = base.model_dump(mode="json", exclude_defaults=True)
    data["channels"][CHANNEL]["sla"] = sla
    data["destinations"] = {"erp": {"type": "http", "url": "http://127.0.0.1:9/hook"}}
    return Settings.model_validate(data)


def _deliveries(db: Database) -> None:
    now = utcnow()
    with db.write() as conn:
        seqs = conn.execute(select(events.c.seq).order_by(events.c.seq)).scalars().all()
        assert len(seqs) >= 2
        conn.execute(insert(deliveries), [
            {"event_seq": seqs[0], "destination": "erp", "ordering_key": "a:1", "status": "delivered", "attempts": 1,
             "next_attempt_at": now, "created_at": now, "updated_at": now, "delivered_at": now + timedelta(seconds=2),
             "last_error": None},
            {"event_seq": seqs[1], "destination": "erp", "ordering_key": "a:2", "status": "dead", "attempts": 12,
             "next_attempt_at": now, "created_at": now, "updated_at": now, "delivered_at": None,
             "last_error": "HTTP 500"},
        ])


def test_dashboard_counts_failures_lag_and_backlog(db: Database, settings: Settings, ctx: ops.OpsContext,
                                                   ingest) -> None:
    ingest(rows(["100234", "100234", "999999"]), "a.csv")
    _deliveries(db)
    data = ops.dashboard(db, _settings(settings, commit_seconds=3600, delivered_seconds=0.5))
    [ch] = data["channels"]
    assert (ch["files_hour"], ch["files_day"], ch["messages_hour"]) == (1, 1, 3)
    assert ch["failures"]["master_data"] == 1 and sum(ch["hourly"]) == 1
    assert ch["commit_lag"]["objective"] == 3600 and ch["commit_lag"]["met"] is True
    assert ch["delivery_lag"]["n"] == 1 and ch["delivery_lag"]["met"] is False
    [erp] = data["destinations"]
    assert erp["name"] == "erp" and erp["dead"] == 1 and erp["delivered"] == 1


def test_console_over_http_replay_and_protections(db: Database, settings: Settings, ctx: ops.OpsContext,
                                                  keys, ingest, tmp_path: Path) -> None:
    res = ingest(rows(["100234", "100234", "999999"]), "a.csv")
    _deliveries(db)
    app = create_app(_settings(settings, commit_seconds=60), db)
    app.state.ops = ctx
    with TestClient(app) as c:
        assert c.get("/console", follow_redirects=False).status_code == 303
        login = c.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        r = c.post("/console/login", data={"key": keys["writer"], "csrf": token}, follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        page = c.get("/console")
        assert page.status_code == 200 and "objective 60" in page.text and "Replay 1 dead letters" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert c.post("/console/replay", data={"destination": "erp", "reason": "x"}).status_code == 403
        r = c.post("/console/replay", data={"destination": "erp", "reason": "ERP back", "csrf": csrf},
                   follow_redirects=False)
        assert r.status_code == 303 and "1+dead+letters" in r.headers["location"]
        with db.read() as conn:
            assert conn.execute(select(deliveries.c.status).where(deliveries.c.ordering_key == "a:2")).scalar() \
                == "pending"
            assert "destinations.replay" in set(conn.execute(select(audit_log.c.action)).scalars())
        trace = c.get(f"/console/trace/{res.inbound_id}")
        assert trace.status_code == 200 and "delivery dead" not in trace.text and "delivery delivered" in trace.text
        # the phi:read key may edit the raw file in the browser, and sees identifiers in excerpts
        c.post("/console/logout", data={"csrf": csrf})
        assert c.get("/console/failures", follow_redirects=False).status_code == 303
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").text).group(1)
        c.post("/console/login", data={"key": keys["phi"], "csrf": token})
        assert "V0000002" in c.get("/console/failures").text
        assert "V0000002" in c.get(f"/console/inbound/{res.inbound_id}/resubmit").text
        # edit in the browser (a textarea sends CRLF): the new version keeps the original's LF line ends
        form = c.get(f"/console/inbound/{res.inbound_id}/resubmit").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        fixed = rows(["100234", "100234", "100234"]).decode()
        r = c.post(f"/console/inbound/{res.inbound_id}/resubmit",
                   data={"csrf": csrf, "content": fixed.replace("\n", "\r\n"), "reason": "typo"},
                   follow_redirects=False)
        assert r.status_code == 303 and "processed" in r.headers["location"]
        new_id = int(r.headers["location"].split("/console/trace/")[1].split("?")[0])
        with db.read() as conn:
            new = conn.execute(select(inbound_files).where(inbound_files.c.id == new_id)).one()
        assert new.parent_id == res.inbound_id
        with ctx.archive.open(new.sha256) as fh:
            assert fh.read() == fixed.encode()
