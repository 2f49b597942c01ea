"""Configuration: YAML plus BRIDGE_* overrides; a bad config stops start-up naming key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bridge.yaml"
    p.write_text(text)
    return p


GOOD = """
database_url: sqlite:///var/x.db
channels:
  cab:
    source: {type: folder, path: /tmp/drop}
    parser: {type: csv, delimiter: ";"}
    mapping: {type: inventory_movement_csv, timezone: America/Chicago}
"""


def test_example_config_is_valid() -> None:
    s = load_settings(ROOT / "config" / "bridge.yaml", environ={})
    assert set(s.channels) == {"cabinet-consumption", "item-master", "cabinet-fixed", "billing-hl7"}
    assert s.database_url.startswith("sqlite:///")


def test_environment_overrides_nested_keys(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD), environ={
        "BRIDGE_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
        "BRIDGE_API__PORT": "9123",
        "BRIDGE_PROCESSING__BATCH_SIZE": "50",
    })
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/test"
    assert s.api.port == 9123
    assert s.processing.batch_size == 50


@pytest.mark.parametrize(
    ("patch", "key", "reason"),
    [
        (("delimiter: \";\"", "delimter: \";\""), "channels.cab.parser.delimter", "unknown key"),
        (("type: csv", "type: edifact"), "channels.cab.parser.type", "unknown parser type 'edifact'"),
        (("timezone: America/Chicago", "timezone: [1]"), "channels.cab.mapping.timezone", "string"),
        (("database_url:", "databse_url:"), "databse_url", "unknown key"),
        (("delimiter: \";\"", "delimiter: \";;\""), "channels.cab.parser.delimiter", "at most 1 character"),
    ],
)
def test_bad_config_names_key_and_reason(tmp_path: Path, patch: tuple[str, str], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD.replace(*patch)), environ={})
    assert info.value.key == key
    assert reason in info.value.reason


def test_api_refuses_non_loopback_bind_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD), environ={"BRIDGE_API__HOST": "0.0.0.0"})
    assert info.value.key == "api" and "allow_remote" in info.value.reason
    s = load_settings(write(tmp_path, GOOD), environ={"BRIDGE_API__HOST": "0.0.0.0", "BRIDGE_API__ALLOW_REMOTE": "true"})
    assert s.api.host == "0.0.0.0"


def test_cli_stops_on_bad_config_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    cfg = write(tmp_path, GOOD.replace("delimiter", "delimter"))
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(cfg), "status"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "config error: channels.cab.parser.delimter: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "missing.yaml", environ={})
    assert "cannot read" in info.value.reason
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "channels: [unclosed"), environ={})
    assert "not valid YAML" in info.value.reason
