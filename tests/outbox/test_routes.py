"""Per-event routes on SQLite and PostgreSQL: an ACK or an outbound file goes to its
partner's return channel only; a route naming no destination is a visible dead letter."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bridge.db import Database
from bridge.db.tables import events
from mappings.base import EventDraft
from outbox.relay import destination_status, replay
from outbox.writer import Origin, write_events
from tests.outbox.helpers import delivery_rows, make_relay


def _write(db: Database, drafts: list[EventDraft]) -> None:
    with db.write() as conn:
        write_events(db, conn, [(d, Origin()) for d in drafts])


def _ack(key: str, route: str | None) -> EventDraft:
    return EventDraft("edi.ack.999.created", "edi_interchange", key,
                      {"filename": f"999_{key}.x12", "content": f"ISA*{key}~"}, route=route)


def _folder(path: Path, subscribe: list[str]) -> dict[str, object]:
    return {"type": "folder", "subscribe": subscribe, "directory": str(path)}


def test_routed_event_goes_to_its_destination_only(db: Database, tmp_path: Path) -> None:
    _write(db, [EventDraft("item.recorded", "item", "I1", {"code": "X1"}), _ack("acme:1", "acme_sftp"),
                EventDraft("edi.ack.999.created", "edi_interchange", "beta:7", {"n": 7})])
    with db.read() as conn:
        assert conn.execute(select(events.c.route).order_by(events.c.seq)).scalars().all() == [None, "acme_sftp", None]
    relay = make_relay(db, {"erp": _folder(tmp_path / "erp", ["*"]),
                            "acks": _folder(tmp_path / "acks", ["edi.ack.*"]),
                            # a return channel subscribes to nothing: the route alone brings its files
                            "acme_sftp": _folder(tmp_path / "acme", [])})
    relay.run_until_idle()
    assert [r.event_type for r in delivery_rows(db, "erp")] == ["item.recorded", "edi.ack.999.created"]
    assert [r.ordering_key for r in delivery_rows(db, "acks")] == ["edi_interchange:beta:7"]
    [acme] = delivery_rows(db, "acme_sftp")
    assert acme.status == "delivered" and acme.ordering_key == "edi_interchange:acme:1"
    assert [p.name for p in (tmp_path / "acme").iterdir()] == ["999_acme:1.x12"]
    assert (tmp_path / "acme" / "999_acme:1.x12").read_text() == "ISA*acme:1~"


def test_unroutable_event_is_a_visible_dead_letter_until_configured(db: Database, tmp_path: Path) -> None:
    _write(db, [_ack("acme:1", "acme_sftp"), EventDraft("item.recorded", "item", "I1", {})])
    relay = make_relay(db, {"erp": _folder(tmp_path / "erp", ["*"]), "files": _folder(tmp_path / "f", ["*"])})
    relay.run_until_idle()
    assert [r.event_type for r in delivery_rows(db, "erp")] == ["item.recorded"]
    [lost] = delivery_rows(db, "acme_sftp")
    assert lost.status == "dead" and lost.attempts == 0
    assert "no destination named 'acme_sftp' is configured" in lost.last_error
    status = {s["name"]: s for s in destination_status(db, ["erp", "files"])}
    assert status["acme_sftp"]["dead"] == 1 and status["acme_sftp"]["backlog"] == 0
    assert status["erp"]["dead"] == 0 and status["erp"]["delivered"] == 1

    # the operator configures the channel: its fan-out from seq 0 meets the dead letter and keeps it
    fixed = make_relay(db, {"erp": _folder(tmp_path / "erp", ["*"]), "acme_sftp": _folder(tmp_path / "acme", [])})
    fixed.run_until_idle()
    assert [r.status for r in delivery_rows(db, "acme_sftp")] == ["dead"]
    assert replay(db, "acme_sftp") == 1
    fixed.run_until_idle()
    [sent] = delivery_rows(db, "acme_sftp")
    assert sent.status == "delivered" and sent.last_error is None
    assert [p.name for p in (tmp_path / "acme").iterdir()] == ["999_acme:1.x12"]
    assert [r.event_type for r in delivery_rows(db, "erp")] == ["item.recorded"]  # still not broadcast


def test_route_to_a_disabled_destination_waits_in_its_fanout_lag(db: Database, tmp_path: Path) -> None:
    _write(db, [_ack("acme:1", "acme_sftp")])
    dests = {"erp": _folder(tmp_path / "erp", ["*"]),
             "acme_sftp": {**_folder(tmp_path / "acme", []), "enabled": False}}
    relay = make_relay(db, dests)
    relay.run_until_idle()
    assert delivery_rows(db, "acme_sftp") == [] and delivery_rows(db, "erp") == []
    [acme] = [s for s in destination_status(db, ["erp", "acme_sftp"]) if s["name"] == "acme_sftp"]
    assert acme["fanout_lag"] == 1 and acme["dead"] == 0
    make_relay(db, {**dests, "acme_sftp": _folder(tmp_path / "acme", [])}).run_until_idle()
    assert [r.status for r in delivery_rows(db, "acme_sftp")] == ["delivered"]


def test_event_draft_stays_positional() -> None:
    d = EventDraft("x.created", "x", "1", {})
    assert d.route is None and EventDraft("x.created", "x", "1", {}, "acme").route == "acme"
