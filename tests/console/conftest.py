"""The console under a real browser: a uvicorn server in a thread and headless Debian Chromium via Playwright.

Session-scoped (one server, one browser for all console tests) on SQLite: the
browser tests check the pages and their protections, the storage behaviour
underneath is covered on both backends by ``tests/ops``. A missing Chromium
or Playwright skips locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import ops
from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.db import Database
from bridge.pipeline.land import land
from tests.ops.conftest import make_settings, rows, seed

CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _need(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


class Server:
    def __init__(self, base: str, db: Database, ctx: ops.OpsContext, keys: dict[str, str], file_id: int) -> None:
        self.base, self.db, self.ctx, self.keys, self.file_id = base, db, ctx, keys, file_id


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import uvicorn

    tmp = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{tmp / 'bridge.db'}"
    db = Database(url)
    db.upgrade()
    seed(db)
    settings = make_settings(tmp, url)
    ctx = ops.OpsContext.from_settings(settings, db)
    keys = {"writer": create_client(db, "operator", ["ops:read", "ops:write"])[1],
            "reader": create_client(db, "viewer", ["ops:read"])[1],
            "records": create_client(db, "records-only", ["records:read"])[1]}
    landed = land(db, ctx.archive, channel="cabinets", src=io.BytesIO(rows(["100234", "999999", "100234"])),
                  name="cabinet-export.csv", origin="sftp://cabinet-vendor/out")
    ctx.processor().process(landed.inbound_id)
    app = create_app(settings, db)
    app.state.ops = ctx
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server(f"http://127.0.0.1:{port}", db, ctx, keys, landed.inbound_id)
    finally:
        server.should_exit = True
        thread.join(10)
        db.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _need(Path(CHROMIUM).exists() or shutil.which("chromium") is not None, f"Chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is not installed")
        raise
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    try:
        yield p
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def login(page: Any, server: Server, key: str) -> None:
    page.goto(f"{server.base}/console/login")
    page.fill("#key", key)
    page.click("#login")
