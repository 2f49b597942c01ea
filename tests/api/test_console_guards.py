"""The console's guards, one per kind of page: no session -> login, a form without the session's CSRF
token -> 403, an action without ``ops:write`` -> 403, and an operation ``bridge.ops`` refuses -> its error page
with its status (never a 500)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge import ops
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.db.tables import console_sessions
from bridge.settings import Settings


def _sign_in(api: TestClient, db: Database, key: str) -> str:
    """Log in through the form; the session's CSRF token."""
    form = api.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    resp = api.post("/console/login", data={"key": key, "csrf": token.group(1), "next": "/console/failures"},
                    follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/console/failures"
    with db.read() as conn:
        return str(conn.execute(select(console_sessions.c.csrf_token)
                                .order_by(console_sessions.c.created_at.desc())).scalars().first())


def test_console_guards_answer_each_case_with_its_page(api: TestClient, db: Database) -> None:
    _, operator = create_client(db, "operator", ["ops:*"])
    _, viewer = create_client(db, "viewer", ["ops:read"])
    resp = api.get("/console/failures", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].startswith("/console/login?")

    csrf = _sign_in(api, db, operator)
    assert api.get("/console/failures").status_code == 200
    action = "/console/failures/424242/status"
    assert api.post(action, data={"status": "resolved", "reason": "x"}).status_code == 403  # no token
    refused = api.post(action, data={"status": "resolved", "reason": "x", "csrf": "forged"})
    assert refused.status_code == 403 and "security token" in refused.text
    # bridge.ops refuses: the error page with its status and its message
    bad = api.post(action, data={"status": "deleted", "reason": "x", "csrf": csrf})
    assert bad.status_code == 422 and "must be" in bad.text and "resolved" in bad.text
    assert api.get("/console/trace/424242").status_code == 404

    csrf = _sign_in(api, db, viewer)
    read_only = api.post(action, data={"status": "resolved", "reason": "x", "csrf": csrf})
    assert read_only.status_code == 403 and "ops:write" in read_only.text


def test_console_uploads_past_the_limit_get_the_error_page_and_change_nothing(
        api: TestClient, db: Database, settings: Settings) -> None:
    _, operator = create_client(db, "operator", ["ops:*"])
    csrf = _sign_in(api, db, operator)
    settings.api.max_upload_bytes = 64
    big = "source_code,target_code\n" + "".join(f"C{i},T{i}\n" for i in range(20))
    refused = api.post("/console/crosswalks/import", data={"kind": "item", "csrf": csrf, "reason": "x"},
                       files={"file": ("items.csv", big.encode())})
    assert refused.status_code == 413 and "max_upload_bytes (64)" in refused.text
    assert ops.crosswalk_search(db, "item", None, limit=10) == []
    resubmit = api.post("/console/inbound/1/resubmit", data={"csrf": csrf, "reason": "x"},
                        files={"file": ("fixed.csv", big.encode())})
    assert resubmit.status_code == 413 and "max_upload_bytes (64)" in resubmit.text

    small = "source_code,target_code\nC1,T1\n"
    saved = api.post("/console/crosswalks/import", data={"kind": "item", "csrf": csrf, "reason": "x"},
                     files={"file": ("items.csv", small.encode())}, follow_redirects=False)
    assert saved.status_code == 303 and [e.source_code for e in ops.crosswalk_search(db, "item", None)] == ["C1"]
