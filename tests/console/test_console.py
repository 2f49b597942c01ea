"""The operator console in headless Chromium: login, the master-data fix loop, CSRF and session protections.

Every page is saved as a screenshot under ``test-artifacts/``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from bridge.db.tables import audit_log, crosswalks, failures, records
from tests.console.conftest import Server, login, shot
from tests.helpers import count


def test_no_session_redirects_to_login(page: Any, console_server: Server) -> None:
    for path in ("/console", "/console/failures", "/console/crosswalks", "/console/audit",
                 f"/console/trace/{console_server.file_id}"):
        page.goto(console_server.base + path)
        assert "/console/login" in page.url
    assert page.locator("#key").is_visible()
    shot(page, "login")


def test_wrong_key_login_is_refused(page: Any, console_server: Server) -> None:
    for key in ("brg_nope", "brg_aaaaaaaa_" + "x" * 43, console_server.keys["records"]):
        login(page, console_server, key)
        assert "/console/login" in page.url
        assert "not valid for the console" in page.locator(".error").inner_text()
    page.goto(console_server.base + "/console")
    assert "/console/login" in page.url


def test_login_cookie_flags_and_logout(page: Any, console_server: Server) -> None:
    login(page, console_server, console_server.keys["reader"])
    assert page.url.endswith("/console")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "bridge_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert "(read-only)" in page.locator("header").inner_text()
    # a read-only key sees no action forms
    page.goto(console_server.base + "/console/failures")
    assert page.locator("#reprocess-all").count() == 0
    page.click("#logout")
    assert "/console/login" in page.url
    page.goto(console_server.base + "/console")
    assert "/console/login" in page.url


def test_csrf_missing_or_wrong_is_refused(page: Any, console_server: Server) -> None:
    login(page, console_server, console_server.keys["writer"])
    before = count(console_server.db, crosswalks)
    form = {"kind": "item", "source_code": "CSRF-1", "target_code": "X"}
    for extra in ({}, {"csrf": "wrong"}):
        resp = page.request.post(console_server.base + "/console/crosswalks/add", form={**form, **extra},
                                 max_redirects=0)
        assert resp.status == 403 and "security token" in resp.text()
    assert count(console_server.db, crosswalks) == before
    # the login form has its own token: a forged login is refused too
    resp = page.request.post(console_server.base + "/console/login",
                             form={"key": console_server.keys["writer"], "csrf": "forged"}, max_redirects=0)
    assert resp.status == 403


def test_fix_master_data_failure_from_the_console(page: Any, console_server: Server) -> None:
    db = console_server.db
    login(page, console_server, console_server.keys["writer"])
    shot(page, "dashboard")
    assert "cabinets" in page.locator("#channels").inner_text()
    assert "master_data 1" in page.locator("#channels").inner_text()

    page.goto(console_server.base + "/console/failures?category=master_data")
    row = page.locator("tr.failure[data-category='master_data']").first
    text = row.inner_text()
    assert "999999" in text and "line 3" in text and "field item" in text
    # the raw excerpt is shown with the encounter column masked (this key lacks phi:read)
    excerpt = row.locator("pre.excerpt").inner_text()
    assert "***" in excerpt and "V0000001" not in excerpt
    shot(page, "failures")

    row.locator("a.suggest").click()
    assert page.locator("#add input[name=source_code]").input_value() == "999999"
    page.fill("#add input[name=target_code]", "ERP-NEW-0999")
    page.fill("#add input[name=reason]", "new item in the ERP")
    page.click("#add-entry")
    assert page.locator("#fix-count").inner_text() == "1"
    shot(page, "crosswalks")

    page.click("#reprocess-fixed")
    assert "/console/jobs/" in page.url
    page.wait_for_function("document.getElementById('job-status').textContent !== 'running'")
    assert page.locator("#job-status").inner_text() == "done", page.locator("main").inner_text()
    assert "resolved 1" in page.locator("#job-summary").inner_text()
    shot(page, "job")

    with db.read() as conn:
        f = conn.execute(select(failures).where(failures.c.key == "999999")).one()
    assert f.status == "resolved"
    page.goto(f"{console_server.base}/console/trace/{console_server.file_id}")
    timeline = page.locator("#timeline").inner_text()
    assert "failure resolved" in timeline
    assert len(re.findall(r"inventory_movement", timeline)) == 3
    shot(page, "trace")
    assert count(db, records) == 3

    page.goto(console_server.base + "/console/audit")
    audit_text = page.locator("#audit").inner_text()
    assert "crosswalks.add" in audit_text and "crosswalks.reprocess_fixed" in audit_text
    assert "console:operator" in audit_text
    shot(page, "audit")
    with db.read() as conn:
        actions = set(conn.execute(select(audit_log.c.action)).scalars())
    assert {"console.login", "crosswalks.add", "crosswalks.reprocess_fixed"} <= actions

    page.goto(f"{console_server.base}/console/inbound/{console_server.file_id}/resubmit")
    assert "needs phi:read" in page.locator("form.card").inner_text()
    shot(page, "resubmit")
