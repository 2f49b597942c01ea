"""End to end: ``bridge run`` as a subprocess, ``mllp_send`` as the sender, charges read back over HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import drop_pg_schema, make_pg_url
from tests.helpers import wait_for
from tests.hl7.messages import DEPARTMENTS, ITEMS, dft_p03

pytestmark = pytest.mark.e2e
MLLP_SEND = Path(sys.executable).parent / "mllp_send"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def bridge_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'var' / 'bridge.db'}"
    else:
        url, schema = make_pg_url()
    seeds = []
    for kind, table in (("department", DEPARTMENTS), ("item", ITEMS)):
        path = tmp_path / f"{kind}.csv"
        path.write_text("source_code,target_code\n" + "".join(f"{k},{v}\n" for k, v in table.items()))
        seeds.append({"kind": kind, "file": str(path)})
    mllp_port, api_port = free_port(), free_port()
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": url, "data_dir": str(tmp_path / "var"), "log_format": "json",
        "api": {"host": "127.0.0.1", "port": api_port}, "crosswalks": seeds,
        "channels": {"billing": {
            "source": {"type": "mllp", "host": "127.0.0.1", "port": mllp_port},
            "parser": {"type": "hl7"}, "mapping": {"type": "hl7_dft_p03"}}},
    }))
    log = open(tmp_path / "bridge.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(config), "run"], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "bridge.log").read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.1)
        yield config, mllp_port, api_port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        if schema:
            drop_pg_schema(schema)


def test_mllp_send_to_bridge_run_gets_aa_and_charges_over_http(bridge_run: tuple[Path, int, int],
                                                               tmp_path: Path) -> None:
    config, mllp_port, api_port = bridge_run
    out = tmp_path / "send.hl7"
    out.write_bytes(dft_p03("E2E1", terminator="\r\n") + dft_p03("E2E1", terminator="\r\n")
                    + dft_p03("E2E2", department="NOWHERE", terminator="\r\n"))
    sent = subprocess.run([str(MLLP_SEND), "--loose", "-f", str(out), "-p", str(mllp_port), "127.0.0.1"],
                          capture_output=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    acks = [a.strip(b"\x1c\r\n") for a in sent.stdout.split(b"\x0b") if a.strip()]
    msas = [next(s for s in a.split(b"\r") if s.startswith(b"MSA")).split(b"|")[1:3] for a in acks]
    assert msas == [[b"AA", b"E2E1"], [b"AA", b"E2E1"], [b"AE", b"E2E2"]]

    cli = subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), "clients", "add", "erp-e2e",
                          "--scopes", "records:read"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    key = next(tok for tok in cli.stdout.split() if tok.startswith("brg_"))
    r = httpx.get(f"http://127.0.0.1:{api_port}/v1/records/charges", headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert sorted(i["data"]["transaction_id"] for i in items) == ["E2E1-1", "E2E1-2", "E2E1-3"]
    assert sorted(i["data"]["amount"] for i in items) == ["-45.00", "15.00", "30.00"]
