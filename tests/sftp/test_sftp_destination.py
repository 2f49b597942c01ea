"""SftpDestination against a real OpenSSH sshd: atomic delivery, the name jail, refusals."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from bridge.errors import PermanentDelivery, RetryableDelivery
from bridge.registry import load
from outbox.destinations.base import OutboxEvent, attempt
from outbox.destinations.sftp import SftpDestination
from tests.sftp.conftest import SshServer, keygen


def make_destination(server: SshServer, directory: Path, **over: object) -> SftpDestination:
    cls = load("destination", "sftp")
    cfg = {"host": "127.0.0.1", "port": server.port, "username": "root", "key_file": str(server.user_key),
           "known_hosts": str(server.known_hosts), "directory": str(directory), "keepalive": 0,
           "connect_timeout": 5}
    cfg.update(over)
    return cls("partner_sftp", cls.Config(**cfg))


def file_event(n: int, filename: str, content: str) -> OutboxEvent:
    payload = {"id": f"ev-{n}", "type": "purchase_order.x12_850.rendered", "data": {"filename": filename,
                                                                                   "content": content}}
    return OutboxEvent(seq=n, id=f"ev-{n}", type="purchase_order.x12_850.rendered", aggregate_type="purchase_order",
                       aggregate_id=str(n), created_at=datetime.now(UTC), payload=orjson.dumps(payload).decode())


def test_delivers_files_atomically_the_receiver_never_sees_a_partial_file(sshd: SshServer, remote_dir: Path) -> None:
    dest = make_destination(sshd, remote_dir)
    body = "ISA*00*synthetic~" * 200_000  # about 3.4 MB, many SFTP writes
    seen_partial: list[str] = []
    stop = threading.Event()

    def receiver() -> None:  # polls the directory like a partner's job would
        while not stop.is_set():
            for entry in os.scandir(remote_dir):
                if entry.name.startswith("."):
                    continue  # hidden temp names are not for receivers
                try:
                    if entry.stat().st_size != len(body):
                        seen_partial.append(entry.name)
                except FileNotFoundError:
                    pass

    watcher = threading.Thread(target=receiver)
    watcher.start()
    try:
        for n in range(3):
            outcome = attempt(dest, file_event(n, "PO 850 ü.x12", body))  # a redelivery replaces it
            assert outcome.delivered, outcome.error
            outcome = attempt(dest, file_event(10 + n, f"po-{n}.x12", body))
            assert outcome.delivered, outcome.error
    finally:
        stop.set()
        watcher.join()
        dest.close()
    assert seen_partial == []
    assert sorted(p.name for p in remote_dir.iterdir()) == ["PO 850 ü.x12", "po-0.x12", "po-1.x12", "po-2.x12"]
    assert (remote_dir / "po-2.x12").read_text() == body


def test_non_file_events_are_written_as_json(sshd: SshServer, remote_dir: Path) -> None:
    dest = make_destination(sshd, remote_dir)
    event = OutboxEvent(seq=1, id="ev-json", type="inventory.movement.recorded", aggregate_type="movement",
                        aggregate_id="m1", created_at=datetime.now(UTC), payload='{"id": "ev-json", "record": {}}')
    assert dest.deliver(event).response == "ev-json.json"
    assert orjson.loads((remote_dir / "ev-json.json").read_bytes())["id"] == "ev-json"
    dest.close()


@pytest.mark.parametrize("bad", ["../escape.x12", "a/b.x12", ".hidden", ".."])
def test_file_names_that_leave_the_directory_are_refused(sshd: SshServer, remote_dir: Path, bad: str) -> None:
    dest = make_destination(sshd, remote_dir)
    with pytest.raises(PermanentDelivery, match="plain file name"):
        dest.deliver(file_event(1, bad, "x"))
    assert list(remote_dir.iterdir()) == []
    assert list(remote_dir.parent.iterdir()) == [remote_dir]
    dest.close()


def test_missing_directory_and_wrong_host_key_are_retryable(sshd: SshServer, remote_dir: Path,
                                                            tmp_path: Path) -> None:
    dest = make_destination(sshd, remote_dir / "missing")
    with pytest.raises(RetryableDelivery, match="missing"):
        dest.deliver(file_event(1, "a.x12", "x"))
    dest.close()
    other = tmp_path / "other"
    keygen(other)
    pub = Path(str(other) + ".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    dest = make_destination(sshd, remote_dir, known_hosts=str(known), auth_failure_backoff=900)
    with pytest.raises(RetryableDelivery, match="CHANGED") as info:
        dest.deliver(file_event(2, "b.x12", "x"))
    assert info.value.retry_after == 900
    assert list(remote_dir.iterdir()) == []
    dest.close()
