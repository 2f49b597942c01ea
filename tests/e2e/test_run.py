"""End to end: ``bridge run`` as a subprocess, files dropped in folders, records read over HTTP.

Runs on SQLite (the embedded default) and PostgreSQL. The API key comes from
``bridge clients add``, as an operator would get it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import drop_pg_schema, make_pg_url
from tests.helpers import consumption_csv, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bridge:
    """One ``bridge run`` process on a temp config."""

    def __init__(self, tmp: Path, db_url: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.drop = {name: tmp / "drop" / name for name in ("consumption", "items", "fixed")}
        example = yaml.safe_load((ROOT / "config" / "bridge.yaml").read_text())
        example["database_url"] = db_url
        example["data_dir"] = str(tmp / "var")
        example["api"] = {"host": "127.0.0.1", "port": self.port}
        example["log_format"] = "json"
        for seed in example["crosswalks"]:
            seed["file"] = str(ROOT / seed["file"])
        folders = {name: ch for name, ch in example["channels"].items() if ch["source"]["type"] == "folder"}
        for channel, key in zip(folders.values(), ("consumption", "items", "fixed"), strict=True):
            channel["source"]["path"] = str(self.drop[key])
            channel["source"]["settle_seconds"] = 0.2
        self.mllp_port = free_port()
        example["channels"]["billing-hl7"]["source"]["port"] = self.mllp_port
        self.config = tmp / "bridge.yaml"
        self.config.write_text(yaml.safe_dump(example))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "bridge.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(self.config), *args],
                              capture_output=True, text=True, cwd=self.tmp, timeout=120)

    def start(self) -> None:
        self.logfh = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(self.config), "run"],
                                     cwd=self.tmp, stdout=self.logfh, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self.port}/healthz"

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)
        finally:
            self.logfh.close()
        return rc

    def get(self, key: str, path: str, **params: Any) -> Any:
        r = httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, headers={"X-API-Key": key}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(params=["sqlite", "postgresql"])
def bridge(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bridge]:
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'var' / 'bridge.db'}"
    else:
        url, schema = make_pg_url()
    b = Bridge(tmp_path, url)
    try:
        yield b
    finally:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(timeout=10)
        if schema:
            drop_pg_schema(schema)


def issue_key(b: Bridge, scopes: str = "records:read,events:read,ops:read") -> str:
    out = b.cli("clients", "add", f"erp-{os.getpid()}-{time.monotonic_ns()}", "--scopes", scopes)
    assert out.returncode == 0, out.stderr
    key = next(tok for tok in out.stdout.split() if tok.startswith("brg_"))
    return key


def test_dropped_files_become_records_and_events_over_http(bridge: Bridge) -> None:
    bridge.start()
    key = issue_key(bridge)
    (bridge.drop["consumption"] / "cab-0800.csv").write_bytes((ROOT / "examples" / "consumption.csv").read_bytes())
    (bridge.drop["items"] / "items.csv").write_bytes((ROOT / "examples" / "items.csv").read_bytes())
    (bridge.drop["fixed"] / "cab7.txt").write_bytes((ROOT / "examples" / "consumption.txt").read_bytes())

    movements = wait_for(lambda: len(bridge.get(key, "/v1/records/inventory-movements")["items"]) == 6 and
                         bridge.get(key, "/v1/records/inventory-movements"), timeout=20)
    items = wait_for(lambda: bridge.get(key, "/v1/records/items")["items"], timeout=20)
    assert sorted(i["data"]["item_code"] for i in items) == ["100234", "100235"]

    by_type = sorted((m["data"]["movement_type"], m["data"]["item"], m["data"]["cost_center"])
                     for m in movements["items"])
    assert ("issue", "ERP-SUT-0001", "CC-4100") in by_type
    assert ("waste", "ERP-SYR-0010", "CC-5100") in by_type
    # encounter is PHI: masked without phi:read
    assert all(m["data"].get("encounter") in (None, "***") for m in movements["items"])

    feed = bridge.get(key, "/v1/events", after=0, limit=100)
    types = [e["type"] for e in feed["items"]]
    assert types.count("inventory.movement.recorded") == 6
    assert types.count("item.master.recorded") == 2
    # the cursor continues where the page ended: nothing after the last event yet
    assert bridge.get(key, "/v1/events", after=feed["next_cursor"])["items"] == []

    # the originals were archived only after landing
    assert not (bridge.drop["consumption"] / "cab-0800.csv").exists()
    assert list((bridge.drop["consumption"] / "archive").rglob("cab-0800.csv"))
    assert bridge.stop() == 0


def test_the_example_charge_sent_over_mllp_is_acked_and_served(bridge: Bridge) -> None:
    """The README's tour: the example DFT^P03 sent with the hl7 package's mllp_send to the example config."""
    bridge.start()
    key = issue_key(bridge)
    send = [str(Path(sys.executable).parent / "mllp_send"), "--loose", "-f", str(ROOT / "examples" / "dft_p03.hl7"),
            "-p", str(bridge.mllp_port), "127.0.0.1"]
    for _ in range(2):  # a resend is ACKed again and charges nothing more
        out = subprocess.run(send, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert b"MSA|AA|EXAMPLE0001" in out.stdout
    charges = bridge.get(key, "/v1/records/charges")["items"]
    assert sorted((c["data"]["transaction_id"], c["data"]["amount"], c["data"]["cost_center"], c["data"]["item"])
                  for c in charges) == [("EX-1", "30.00", "CC-4100", "ERP-SUT-0001"),
                                        ("EX-2", "12.50", "CC-4100", "ERP-SYR-0010"),
                                        ("EX-3", "-15.00", "CC-4100", "ERP-SUT-0001")]  # a credit nets
    assert bridge.stop() == 0


def test_sigterm_mid_drop_leaves_no_half_landed_file_and_restart_finishes(bridge: Bridge) -> None:
    rows = 20_000
    data = consumption_csv(rows)
    bridge.start()
    key = issue_key(bridge)
    staging = bridge.tmp / "staging.csv"
    staging.write_bytes(data)
    os.replace(staging, bridge.drop["consumption"] / "big.csv")
    time.sleep(0.6)
    assert bridge.stop(signal.SIGTERM) == 0
    tmp_dir = bridge.tmp / "var" / "archive" / "tmp"
    assert not tmp_dir.exists() or list(tmp_dir.iterdir()) == [], "a half-written archive temp file was left behind"

    bridge.start()
    final = wait_for(lambda: (lambda r: r if r["status"] == "processed" else None)(
        next(iter(bridge.get(key, "/v1/inbound")["items"]), {"status": None})), timeout=120, interval=0.5)
    assert final["size"] == len(data)
    assert final["message_count"] == rows
    # no duplicates whatever the moment of the signal: one record per row
    total = 0
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["after"] = cursor
        page = bridge.get(key, "/v1/records/inventory-movements", **params)
        total += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor or not page["items"]:
            break
    assert total == rows
    assert bridge.stop() == 0
