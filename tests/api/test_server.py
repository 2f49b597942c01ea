"""``api.workers: 2``: the API served by two worker processes that share one socket and the rate limits.

The server runs as ``bridge run`` serves it (:func:`bridge.api.server.serve`),
in its own process on a loopback port; requests come on fresh connections, so
the kernel hands them to either worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bridge.api.keys import create_client
from bridge.db import Database
from tests.api.conftest import auth, csv_rows

ROOT = Path(__file__).resolve().parents[2]

SERVER = r"""
import sys
import time
from bridge.api.server import serve
from bridge.db import Database
from bridge.settings import Settings
url, port, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
settings = Settings.model_validate({"data_dir": data_dir, "database_url": url, "log_level": "WARNING",
                                   "api": {"workers": 2}})
serve(settings, Database(url), host="127.0.0.1", port=port)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(pid: int) -> list[int]:
    """The pids of ``pid``'s children that are multiprocessing spawn workers (not its resource tracker)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):  # polls; a bound so a server that never comes up fails the test
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} during start-up")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server never answered /healthz")


def test_two_workers_serve_share_the_rate_limit_and_stop_together(db: Database, tmp_path: Path,
                                                                  ingest: Callable[..., Any]) -> None:
    ingest(csv_rows(3))
    _, key = create_client(db, "erp", ["records:read"], rate_limit_per_minute=6)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, db.url, str(port), str(tmp_path / "var")], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc)
        workers = _workers(proc.pid)
        assert len(workers) == 2
        pages = [httpx.get(f"{base}/v1/records/inventory-movements", headers=auth(key), timeout=30)
                 for _ in range(9)]
        # one bucket of 6 for the client, whichever worker answered
        assert [p.status_code for p in pages] == [200] * 6 + [429] * 3
        assert len(pages[0].json()["items"]) == 3
        assert pages[-1].headers["retry-after"].isdigit()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]
