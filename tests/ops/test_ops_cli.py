"""``bridge crosswalk ...`` and ``bridge failures resolve|ignore`` against a real database (both backends)."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bridge.cli import main
from bridge.db import Database
from bridge.db.tables import audit_log, failures
from bridge.settings import Settings
from tests.helpers import count
from tests.ops.conftest import CHANNEL, rows


def test_crosswalk_and_failure_commands(db: Database, settings: Settings, ingest, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ingest(rows(["777", "778", "779"]), "a.csv")
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_defaults=True)))
    c = ["-c", str(config)]
    assert main([*c, "crosswalk", "add", "item", "777", "ERP-777", "--reason", "new", "--reprocess"]) == 0
    out = capsys.readouterr().out
    assert "fix 1 open failures" in out and "1 resolved" in out
    csv_file = tmp_path / "items.csv"
    csv_file.write_text("source_code,target_code,description\n778,ERP-778,Tape\n")
    assert main([*c, "crosswalk", "import", "item", str(csv_file)]) == 0
    assert "fix 1 open failures" in capsys.readouterr().out
    assert main([*c, "crosswalk", "list", "item", "-q", "tape"]) == 0
    assert "778\tERP-778\tactive" in capsys.readouterr().out
    assert main([*c, "crosswalk", "deactivate", "item", "778", "--reason", "retired"]) == 0
    assert main([*c, "crosswalk", "deactivate", "item", "nope"]) == 1
    capsys.readouterr()
    with db.read() as conn:
        ids = conn.execute(select(failures.c.id).where(failures.c.status == "open").order_by(failures.c.id)).scalars().all()
    assert len(ids) == 2  # 778 (not reprocessed) and 779
    assert main([*c, "failures", "ignore", str(ids[0]), "--reason", "test data"]) == 0
    assert main([*c, "failures", "resolve", str(ids[0]), "--reason", "again"]) == 1
    assert "not open" in capsys.readouterr().err
    assert count(db, audit_log, audit_log.c.actor.like("cli:%")) == 5


def test_commands_run_in_process_leave_no_connection_open(db: Database, settings: Settings, ingest,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``main()`` can be embedded (a scheduler, these tests): a command closes every connection it opened.

    A psycopg connection dropped while open warns (ResourceWarning) whenever the garbage collector gets to it,
    in whatever code runs then; it was seen as a flaky failure of unrelated tests."""
    ingest(rows(["901"]), "leak.csv")
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_defaults=True)))
    c = ["-c", str(config)]
    with db.read() as conn:
        [failure_id] = conn.execute(select(failures.c.id)).scalars().all()
    drop = tmp_path / "again.csv"
    drop.write_bytes(rows(["902"], start=1))
    commands = [["db", "upgrade"], ["status"], ["failures", "list"], ["failures", "show", str(failure_id)],
                ["failures", "reprocess", str(failure_id)], ["ingest", str(drop), "--channel", CHANNEL]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for command in commands:
            main([*c, *command])
            gc.collect()
    capsys.readouterr()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_user_without_a_passwd_entry_is_audited_as_cli_unknown(db: Database, settings: Settings, ingest,
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """In a container whose uid has no passwd entry ``getpass.getuser()`` raises: the reprocess still runs and is
    audited (it wrote the audit row after the work, so the command died with the messages reprocessed)."""
    ingest(rows(["903"]), "nobody.csv")
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_defaults=True)))

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 4242")

    monkeypatch.setattr("getpass.getuser", no_user)
    with db.read() as conn:
        [failure_id] = conn.execute(select(failures.c.id).where(failures.c.status == "open")).scalars().all()
    assert main(["-c", str(config), "failures", "reprocess", str(failure_id), "--reason", "retry"]) == 1  # fails again
    assert "reprocessed 1 failed messages" in capsys.readouterr().out
    with db.read() as conn:
        actors = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "failures.reprocess")).scalars().all()
    assert actors == ["cli:unknown"]
