"""Operator surface of the relay: ``/v1/destinations``, ``/v1/replay`` and the CLI, on both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge.api.app import create_app
from bridge.api.keys import create_client
from bridge.cli import main
from bridge.db import Database
from bridge.db.tables import audit_log
from bridge.settings import Settings
from tests.outbox.conftest import Receiver, Reply, add_events
from tests.outbox.helpers import delivery_rows, make_relay


@pytest.fixture
def setup(db: Database, tmp_path: Path, receiver: Receiver) -> Iterator[tuple[Settings, str, str]]:
    url, path = receiver.route(lambda n: Reply(400, body=b"rejected") if n == 0 else Reply())
    settings = Settings.model_validate({
        "database_url": db.engine.url.render_as_string(hide_password=False), "data_dir": str(tmp_path / "var"),
        "destinations": {"erp": {"type": "http", "url": url, "subscribe": ["po.*"]},
                         "files": {"type": "folder", "directory": str(tmp_path / "out"), "enabled": False}},
    })
    yield settings, url, path


def test_api_lists_pauses_resumes_and_replays(db: Database, setup: tuple[Settings, str, str]) -> None:
    settings, url, path = setup
    add_events(db, [("po.created", "P1", {}), ("po.created", "P2", {})])
    relay = make_relay(db, {"erp": {"type": "http", "url": url, "subscribe": ["po.*"]}})
    relay.run_until_idle()
    reader = {"X-API-Key": create_client(db, "ops-reader", ["ops:read"])[1]}
    writer = {"X-API-Key": create_client(db, "ops-writer", ["ops:read", "ops:write"])[1]}
    with TestClient(create_app(settings, db)) as api:
        body = api.get("/v1/destinations", headers=reader).json()
        erp = next(d for d in body if d["name"] == "erp")
        assert erp["type"] == "http" and erp["dead"] == 1 and erp["delivered"] == 1 and erp["backlog"] == 0
        assert erp["subscribe"] == ["po.*"] and erp["attempts"] == 2
        assert api.post("/v1/destinations/erp/pause", headers=reader).status_code == 403
        assert api.post("/v1/destinations/nope/pause", headers=writer).status_code == 404
        resp = api.post("/v1/destinations/erp/pause", headers=writer, json={"reason": "ERP upgrade"})
        assert resp.status_code == 200 and resp.json()["paused"] and resp.json()["paused_reason"] == "ERP upgrade"
        resp = api.post("/v1/replay", headers=writer, json={"destination": "erp", "status": "dead", "type": "po.*"})
        assert resp.json() == {"destination": "erp", "replayed": 1}
        instances = relay.open_instances()
        assert relay.work_once(instances) == 0
        instances["erp"].close()
        assert api.get("/v1/destinations", headers=reader).json()[0]["backlog"] == 1  # paused: kept
        assert api.post("/v1/destinations/erp/resume", headers=writer).json()["paused"] is False
        relay.run_until_idle()
        assert {r.status for r in delivery_rows(db, "erp")} == {"delivered"}
        assert api.post("/v1/replay", headers=writer, json={"destination": "erp", "since": "2026-01-01T00:00:00"}
                        ).status_code == 422
    with db.read() as conn:
        actions = conn.execute(select(audit_log.c.actor, audit_log.c.action).order_by(audit_log.c.id)).all()
    assert [tuple(a) for a in actions] == [("api:ops-writer", "destinations.pause"),
                                           ("api:ops-writer", "destinations.replay"),
                                           ("api:ops-writer", "destinations.resume")]


def test_cli_status_pause_resume_replay(db: Database, setup: tuple[Settings, str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    settings, url, path = setup
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(yaml.safe_dump(settings.model_dump(mode="json", include={"database_url", "data_dir",
                                                                             "destinations"})))
    add_events(db, [("po.created", "P1", {}), ("item.recorded", "I1", {})])
    relay = make_relay(db, {"erp": {"type": "http", "url": url, "subscribe": ["po.*"]}})
    relay.run_until_idle()
    assert main(["-c", str(cfg), "destinations", "status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["DESTINATION", "PAUSED", "BACKLOG"]
    assert any(line.split()[0] == "erp" and line.split()[-2:] == ["1", "0"] for line in out.splitlines())
    assert main(["-c", str(cfg), "destinations", "pause", "erp", "--reason", "window"]) == 0
    assert main(["-c", str(cfg), "destinations", "pause", "nope"]) == 2
    assert main(["-c", str(cfg), "replay", "--destination", "erp", "--status", "dead", "--key", "P1"]) == 0
    assert "1 deliveries to erp queued again" in capsys.readouterr().out
    assert main(["-c", str(cfg), "destinations", "resume", "erp"]) == 0
    relay.run_until_idle()
    assert main(["-c", str(cfg), "destinations", "status", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    erp = next(r for r in rows if r["name"] == "erp")
    assert erp["delivered"] == 1 and erp["dead"] == 0 and not erp["paused"]


def test_bridge_run_starts_the_relay_service(db: Database, tmp_path: Path) -> None:
    from bridge.runtime import Runtime
    from outbox.relay import service_factory

    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "var"), "relay": {"poll_seconds": 0.02, "workers": 1},
        "destinations": {"acks": {"type": "folder", "directory": str(tmp_path / "acks"), "subscribe": ["*.ack.*"]}},
    })
    assert service_factory(Runtime(Settings.model_validate({"data_dir": str(tmp_path / "v2")}), db=db)) is None
    runtime = Runtime(settings, db=db, with_sources=False)
    runtime.start()
    try:
        add_events(db, [("hl7.ack.sent", "M1", {"filename": "ACK1.hl7", "content": "MSA|AA|M1\r"}),
                        ("item.recorded", "I1", {})])
        target = tmp_path / "acks" / "ACK1.hl7"
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runtime.stop()
    assert target.read_bytes() == b"MSA|AA|M1\r"
    assert [p.name for p in (tmp_path / "acks").iterdir()] == ["ACK1.hl7"]


def test_relay_settings_are_validated() -> None:
    from bridge.errors import ConfigError
    from bridge.settings import load_settings

    assert Settings().relay.max_attempts >= 1
    cfg = {"BRIDGE_RELAY__WORKERS": "0"}
    with pytest.raises(ConfigError, match="relay.workers"):
        load_settings(environ=cfg)
    with pytest.raises(ConfigError, match="destinations.erp.retries"):
        load_settings(environ={"BRIDGE_DESTINATIONS__ERP__TYPE": "http",
                               "BRIDGE_DESTINATIONS__ERP__URL": "http://127.0.0.1:1/x",
                               "BRIDGE_DESTINATIONS__ERP__RETRIES": "3"})


def test_bridge_relay_command_runs_until_sigterm(db: Database, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": db.engine.url.render_as_string(hide_password=False), "data_dir": str(tmp_path / "var"),
        "relay": {"poll_seconds": 0.05, "workers": 1},
        "destinations": {"files": {"type": "folder", "directory": str(out)}},
    }))
    [eid] = add_events(db, [("item.recorded", "I1", {"code": "X1"})])
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(cfg), "relay"],
                            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 30
        while not (out / f"{eid}.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert (out / f"{eid}.json").exists()
