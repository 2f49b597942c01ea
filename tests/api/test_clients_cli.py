"""``bridge clients add|list|revoke``: the key printed once works against the API, revoked it stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bridge.cli import main
from bridge.db import Database
from tests.api.conftest import assert_problem, auth


def test_add_list_revoke(db_url: str, db: Database, api: TestClient, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(f"database_url: '{db_url}'\ndata_dir: '{tmp_path / 'var'}'\n")
    assert main(["-c", str(config), "clients", "add", "erp", "--scopes", "records:read,events:read",
                 "--rate-limit", "600"]) == 0
    out = capsys.readouterr()
    key = out.out.strip().splitlines()[-1]
    assert key.startswith("brg_")
    assert "shown only once" in out.err
    assert api.get("/v1/records/items", headers=auth(key)).status_code == 200

    assert main(["-c", str(config), "clients", "list"]) == 0
    listing = capsys.readouterr().out
    assert "erp" in listing and "active" in listing and "600" in listing and "records:read" in listing
    assert key not in listing and key.split("_", 2)[2] not in listing

    assert main(["-c", str(config), "clients", "add", "erp", "--scopes", "records:read"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["-c", str(config), "clients", "add", "x", "--scopes", "records:write"]) == 1
    assert "unknown scope" in capsys.readouterr().err

    assert main(["-c", str(config), "clients", "revoke", "erp"]) == 0
    capsys.readouterr()
    assert_problem(api.get("/v1/records/items", headers=auth(key)), 401)
    assert main(["-c", str(config), "clients", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
