"""SftpSource against a real OpenSSH sshd: completeness, acks, leases, failures, odd names."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from paramiko.packet import Packetizer
from pydantic import ValidationError
from sqlalchemy import event, insert, select

from bridge.db import Database, utcnow
from bridge.db.tables import inbound_files, remote_files
from bridge.errors import SourceError
from bridge.pipeline.land import Archive, Lander
from bridge.registry import load
from bridge.sftp_client import safe_remote_name
from bridge.sources.sftp import SftpSource
from tests.sftp.conftest import SshServer, free_port, keygen


def make_source(db: Database, tmp_path: Path, server: SshServer, path: Path | str, *,
                channel: str = "sftp_in", port: int | None = None, **over: Any) -> SftpSource:
    cfg: dict[str, Any] = {
        "host": "127.0.0.1", "port": port or server.port, "username": "root",
        "key_file": str(server.user_key), "known_hosts": str(server.known_hosts),
        "path": str(path), "after": "delete", "read_lock": "rename", "poll_interval": 0.05,
        "reconnect_initial": 0.05, "reconnect_max": 0.2, "connect_timeout": 5, "keepalive": 0,
    }
    cfg.update(over)
    cls = load("source", "sftp")
    return cls(channel, cls.Config(**cfg), Lander(db, Archive(tmp_path / "archive")))


def landed(db: Database, channel: str = "sftp_in") -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(
            select(inbound_files.c.name, inbound_files.c.sha256, inbound_files.c.size, inbound_files.c.status)
            .where(inbound_files.c.channel == channel).order_by(inbound_files.c.id)).all())


def remote_rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(remote_files.c.path, remote_files.c.status, remote_files.c.error)
                                 .order_by(remote_files.c.id)).all())


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def running() -> Iterator[list[SftpSource]]:
    """Sources started in a test; stopped at its end."""
    started: list[SftpSource] = []
    yield started
    for s in started:
        s.stop(10)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_temp_files(tmp_path: Path) -> list[Path]:
    """Downloads in progress: a large file streams into the archive's temp dir."""
    tmp = tmp_path / "archive" / "tmp"
    return [p for p in tmp.rglob("*") if p.is_file()] if tmp.exists() else []


# -- taking files ----------------------------------------------------------------


def test_files_uploaded_by_openssh_sftp_are_landed_then_deleted(db: Database, tmp_path: Path, sshd: SshServer,
                                                                remote_dir: Path) -> None:
    local = tmp_path / "up"
    local.mkdir()
    bodies = {f"order-{i}.x12": f"ISA*{i}*synthetic~\n".encode() * (i + 1) for i in range(3)}
    for name, body in bodies.items():
        (local / name).write_bytes(body)
    sshd.sftp_batch("".join(f"put {local / n} {remote_dir / n}\n" for n in bodies))
    source = make_source(db, tmp_path, sshd, remote_dir)
    assert source.poll_once() == 3
    assert [(r.name, r.sha256, r.status) for r in landed(db)] == [(n, sha(b), "landed") for n, b in bodies.items()]
    assert list(remote_dir.iterdir()) == []
    assert {r.status for r in remote_rows(db)} == {"done"}
    assert source.status.landed == 3
    assert source.status.extra["fingerprint"].startswith("SHA256:")
    assert archive_temp_files(tmp_path) == []  # no temp file left behind
    source.conn.close()


def test_a_growing_file_is_not_landed_until_it_settles(db: Database, tmp_path: Path, sshd: SshServer,
                                                      remote_dir: Path) -> None:
    now = [1000.0]
    source = make_source(db, tmp_path, sshd, remote_dir, read_lock="changed", settle_seconds=10)
    source.clock = lambda: now[0]
    f = remote_dir / "batch.csv"
    f.write_bytes(b"a,b\n1,2\n")
    assert source.poll_once() == 0  # first sight
    now[0] += 11
    with open(f, "ab") as fh:
        fh.write(b"3,4\n")  # still being written
    assert source.poll_once() == 0
    assert landed(db) == []
    now[0] += 5
    assert source.poll_once() == 0  # unchanged, but not for settle_seconds yet
    now[0] += 6
    assert source.poll_once() == 1
    assert [r.sha256 for r in landed(db)] == [sha(b"a,b\n1,2\n3,4\n")]
    source.conn.close()


def test_done_marker_and_temp_names(db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path) -> None:
    source = make_source(db, tmp_path, sshd, remote_dir, read_lock="done_marker", done_suffix=".done")
    (remote_dir / "a.csv").write_bytes(b"x\n")
    (remote_dir / "b.csv.part").write_bytes(b"half")
    (remote_dir / ".c.csv").write_bytes(b"hidden")
    assert source.poll_once() == 0
    (remote_dir / "a.csv.done").write_bytes(b"")
    assert source.poll_once() == 1
    assert [r.name for r in landed(db)] == ["a.csv"]
    assert sorted(p.name for p in remote_dir.iterdir()) == [".c.csv", "b.csv.part"]  # marker went with it
    source.conn.close()


def test_rename_into_place_is_taken(db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path) -> None:
    source = make_source(db, tmp_path, sshd, remote_dir, read_lock="rename", pattern="*.hl7")
    (remote_dir / "adt.hl7.tmp").write_bytes(b"MSH|^~\\&|partial")
    (remote_dir / "notes.txt").write_bytes(b"not matching the pattern")
    assert source.poll_once() == 0
    os.rename(remote_dir / "adt.hl7.tmp", remote_dir / "adt.hl7")
    assert source.poll_once() == 1
    assert [r.name for r in landed(db)] == ["adt.hl7"]
    source.conn.close()


def test_after_move(db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path) -> None:
    source = make_source(db, tmp_path, sshd, remote_dir, after="move:processed")
    (remote_dir / "a.csv").write_bytes(b"1\n")
    assert source.poll_once() == 1
    assert (remote_dir / "processed" / "a.csv").read_bytes() == b"1\n"
    assert not (remote_dir / "a.csv").exists()
    assert source.poll_once() == 0
    assert len(landed(db)) == 1
    source.conn.close()


def test_after_keep_fetches_a_file_once_and_a_changed_file_again(db: Database, tmp_path: Path, sshd: SshServer,
                                                                 remote_dir: Path) -> None:
    source = make_source(db, tmp_path, sshd, remote_dir, after="keep")
    f = remote_dir / "items.csv"
    f.write_bytes(b"sku\nA\n")
    assert source.poll_once() == 1
    assert source.poll_once() == 0
    # a second process (another source object) remembers it too: it is in the database
    other = make_source(db, tmp_path, sshd, remote_dir, after="keep")
    assert other.poll_once() == 0
    f.write_bytes(b"sku\nA\nB\n")
    os.utime(f, (1_700_000_000, 1_700_000_000))
    assert source.poll_once() == 1
    assert f.exists()
    assert [r.sha256 for r in landed(db)] == [sha(b"sku\nA\n"), sha(b"sku\nA\nB\n")]
    source.conn.close()
    other.conn.close()


def test_names_with_spaces_unicode_and_dots_stay_inside(db: Database, tmp_path: Path, sshd: SshServer,
                                                       remote_dir: Path) -> None:
    names = ["a b.csv", "zürich – 東京.csv", "a..b.csv", "x ..y .csv"]
    for n in names:
        (remote_dir / n).write_bytes(n.encode())
    outside = remote_dir.parent / "outside.csv"
    outside.write_bytes(b"must stay")
    source = make_source(db, tmp_path, sshd, remote_dir)
    assert source.poll_once() == 4
    assert sorted(r.name for r in landed(db)) == sorted(names)
    assert outside.read_bytes() == b"must stay"
    assert archive_temp_files(tmp_path) == []
    source.conn.close()


def test_remote_names_that_would_escape_are_refused() -> None:
    for bad in ("..", ".", "", "../etc/passwd", "a/b", "a\x00b"):
        assert not safe_remote_name(bad)
    for good in ("a..b", "..x", "x..", "a b", "东京.csv"):
        assert safe_remote_name(good)


def test_ten_thousand_files_in_one_directory_all_land_exactly_once(sqlite_db: Database, tmp_path: Path,
                                                                   sshd: SshServer, remote_dir: Path) -> None:
    # SQLite only: this is about a big directory (listing, per-poll budget, batches), not storage
    names = [f"f{i:05d}.txt" for i in range(10_000)]
    for i, name in enumerate(names):
        (remote_dir / name).write_bytes(b"%d\n" % i)
    source = make_source(sqlite_db, tmp_path, sshd, remote_dir, max_files_per_poll=2_500)
    assert source.poll_once() == 2_500
    assert source.status.extra["listed"] == 10_000
    assert source.status.extra["deferred"] == 10_000 - 2_500
    assert [source.poll_once() for _ in range(4)] == [2_500, 2_500, 2_500, 0]
    rows = landed(sqlite_db)
    assert [r.name for r in rows] == names  # each once, in name order
    assert {r.status for r in rows} == {"landed"}
    assert [r.sha256 for r in rows[:3]] == [sha(b"0\n"), sha(b"1\n"), sha(b"2\n")]
    assert list(remote_dir.iterdir()) == []
    assert {r.status for r in remote_rows(sqlite_db)} == {"done"}
    assert source.status.state == "ok"
    source.conn.close()


def test_small_and_large_files_of_every_boundary_size_land_intact(db: Database, tmp_path: Path, sshd: SshServer,
                                                                   remote_dir: Path) -> None:
    # up to request_size a file is read in one request and landed with its batch's group;
    # above it, it is streamed with pipelined reads into the archive
    request = 32_768
    sizes = {"empty.bin": 0, "one.bin": 1, "one-request.bin": request, "one-more.bin": request + 1,
             "large.bin": 3 * 1024 * 1024 + 17}
    bodies = {name: os.urandom(size) for name, size in sizes.items()}
    for name, body in bodies.items():
        (remote_dir / name).write_bytes(body)
    source = make_source(db, tmp_path, sshd, remote_dir, after="move:done", request_size=request,
                         prefetch_requests=4)
    assert source.poll_once() == 5
    assert {r.name: (r.sha256, r.size) for r in landed(db)} == {n: (sha(b), len(b)) for n, b in bodies.items()}
    assert sorted(p.name for p in (remote_dir / "done").iterdir()) == sorted(bodies)
    assert sorted(p.name for p in remote_dir.iterdir()) == ["done"]
    assert archive_temp_files(tmp_path) == []
    source.conn.close()


def test_a_download_with_one_request_in_flight_leaves_no_prefetch_thread_behind(
        db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path) -> None:
    # with one request in flight paramiko's prefetch runs dry after every response: unguarded, the
    # reader fell back to synchronous reads while paramiko's thread went on requesting the file into
    # an unread buffer and outlived the handle (dying with "Socket is closed" once the connection closed)
    body = os.urandom(40 * 32_768 + 5)
    (remote_dir / "big.bin").write_bytes(body)
    source = make_source(db, tmp_path, sshd, remote_dir, request_size=32_768, prefetch_requests=1)
    assert source.poll_once() == 1
    assert [(r.name, r.sha256) for r in landed(db)] == [("big.bin", sha(body))]
    assert [t.name for t in threading.enumerate() if "prefetch" in t.name] == []
    source.conn.close()


def test_after_keep_an_unchanged_directory_costs_no_database_reads(sqlite_db: Database, tmp_path: Path,
                                                                    sshd: SshServer, remote_dir: Path) -> None:
    for i in range(300):
        (remote_dir / f"item-{i:03d}.csv").write_bytes(b"sku\n%d\n" % i)
    source = make_source(sqlite_db, tmp_path, sshd, remote_dir, after="keep")
    assert source.poll_once() == 300
    statements: list[str] = []
    listen = (sqlite_db.engine, "before_cursor_execute")

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(*listen, record)
    try:
        assert [source.poll_once() for _ in range(3)] == [0, 0, 0]
        assert [s for s in statements if "remote_files" in s] == []
        # a file changed in place is a new (name, size, mtime): looked up and fetched again
        f = remote_dir / "item-007.csv"
        f.write_bytes(b"sku\n7\nchanged\n")
        os.utime(f, (1_700_000_000, 1_700_000_000))
        assert source.poll_once() == 1
    finally:
        event.remove(*listen, record)
    assert len(landed(sqlite_db)) == 301
    source.conn.close()


def test_a_server_allowing_fewer_sessions_than_asked_still_takes_every_file(
        db: Database, tmp_path: Path, user_key: Path, remote_dir: Path) -> None:
    server = SshServer(tmp_path / "sshd-2", user_key, max_sessions=2).start()
    try:
        for i in range(30):
            (remote_dir / f"f{i:02d}.txt").write_bytes(b"%d\n" % i)
        source = make_source(db, tmp_path, server, remote_dir, transfer_sessions=6)
        assert source.poll_once() == 30
        assert len(landed(db)) == 30
        assert list(remote_dir.iterdir()) == []
        assert len(source.conn.sessions(6)) == 2  # MaxSessions 2: the refused ones are not an error
        source.conn.close()
    finally:
        server.stop()


def test_aes_gcm_is_negotiated_and_a_download_survives_rekeys(db: Database, tmp_path: Path, sshd: SshServer,
                                                               remote_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenSSH rekeys after about 1 GB, paramiko after 512 MiB: make it happen every MiB here,
    # so a single 12 MiB download crosses a dozen key exchanges
    monkeypatch.setattr(Packetizer, "REKEY_BYTES", 1024 * 1024)
    body = os.urandom(12 * 1024 * 1024)
    (remote_dir / "big.bin").write_bytes(body)
    source = make_source(db, tmp_path, sshd, remote_dir)
    assert source.poll_once() == 1
    assert source.status.extra["cipher"] == "aes128-gcm@openssh.com"
    [row] = landed(db)
    assert (row.sha256, row.size) == (sha(body), len(body))
    source.conn.close()


# -- several processes, leases ------------------------------------------------------


def test_two_processes_never_download_the_same_file_twice(db: Database, tmp_path: Path, sshd: SshServer,
                                                          remote_dir: Path) -> None:
    for i in range(60):
        (remote_dir / f"f{i:03d}.txt").write_bytes(b"file %d\n" % i)
    a = make_source(db, tmp_path, sshd, remote_dir)
    b = make_source(db, tmp_path, sshd, remote_dir)
    assert a.owner != b.owner
    a.conn.sftp(), b.conn.sftp()  # connect first, so both race on the files
    errors: list[BaseException] = []

    def run(s: SftpSource) -> None:
        try:
            s.poll_once()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the loser of a race may find the file already deleted: that is a skipped file, not an error
    assert errors == []
    rows = landed(db)
    assert len(rows) == 60
    assert {r.status for r in rows} == {"landed"}
    assert a.status.landed + b.status.landed == 60
    assert a.status.duplicates + b.status.duplicates == 0
    a.conn.close()
    b.conn.close()


def test_a_dead_process_lease_is_taken_over(db: Database, tmp_path: Path, sshd: SshServer,
                                            remote_dir: Path) -> None:
    (remote_dir / "old.csv").write_bytes(b"old\n")
    (remote_dir / "busy.csv").write_bytes(b"busy\n")
    now = utcnow()
    with db.write() as conn:
        for name, until in (("old.csv", now - timedelta(minutes=1)), ("busy.csv", now + timedelta(minutes=10))):
            st = (remote_dir / name).stat()
            conn.execute(insert(remote_files), {
                "channel": "sftp_in", "path": str(remote_dir / name), "size": st.st_size, "mtime": int(st.st_mtime),
                "status": "leased", "lease_owner": "dead-host:1:x", "lease_until": until, "updated_at": now})
    source = make_source(db, tmp_path, sshd, remote_dir)
    assert source.poll_once() == 1
    assert [r.name for r in landed(db)] == ["old.csv"]
    assert sorted(p.name for p in remote_dir.iterdir()) == ["busy.csv"]
    source.conn.close()


# -- failures -----------------------------------------------------------------------


def test_permission_denied_on_delete_lands_once_and_reports(db: Database, tmp_path: Path, sshd: SshServer,
                                                            remote_dir: Path) -> None:
    (remote_dir / "a.csv").write_bytes(b"1\n")
    source = make_source(db, tmp_path, sshd, remote_dir, port=sshd.deny_port)
    assert source.poll_once() == 1
    assert source.status.state == "degraded"
    assert "permission denied" in (source.status.last_error or "").lower()
    assert "'a.csv'" in (source.status.last_error or "")
    for _ in range(3):
        assert source.poll_once() == 0
    assert len(landed(db)) == 1
    assert (remote_dir / "a.csv").exists()
    [row] = remote_rows(db)
    assert row.status == "ack_failed" and "delete" in row.error
    source.conn.close()


def test_remote_directory_missing(db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path,
                                  running: list[SftpSource]) -> None:
    missing = remote_dir / "not-yet"
    source = make_source(db, tmp_path, sshd, missing)
    with pytest.raises(SourceError, match="not found"):
        source.poll_once()
    source.start()
    running.append(source)
    wait_for(lambda: source.status.state == "error", "error state")
    assert "remote directory" in (source.status.last_error or "") and "not found" in (source.status.last_error or "")
    missing.mkdir()
    (missing / "late.csv").write_bytes(b"late\n")
    wait_for(lambda: len(landed(db)) == 1, "file landed once the directory exists")
    wait_for(lambda: source.status.state == "ok", "ok state")


def test_server_down_at_start_retries_and_other_channel_keeps_working(
        db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path, running: list[SftpSource]) -> None:
    down = make_source(db, tmp_path, sshd, remote_dir, channel="down", port=free_port())
    up = make_source(db, tmp_path, sshd, remote_dir, channel="up")
    down.start()
    up.start()
    running.extend([down, up])
    (remote_dir / "a.csv").write_bytes(b"1\n")
    wait_for(lambda: len(landed(db, "up")) == 1, "the healthy channel lands")
    wait_for(lambda: down.conn.attempts >= 3, "the down channel retries")
    assert down.status.state == "error"
    assert "cannot connect to 127.0.0.1" in (down.status.last_error or "")
    assert landed(db, "down") == []
    (remote_dir / "b.csv").write_bytes(b"2\n")
    wait_for(lambda: len(landed(db, "up")) == 2, "the healthy channel keeps landing")


def test_wrong_host_key_is_refused_with_fingerprint_and_not_retried(
        db: Database, tmp_path: Path, sshd: SshServer, remote_dir: Path, running: list[SftpSource]) -> None:
    other_key = tmp_path / "other_host_key"
    keygen(other_key)
    pub = Path(str(other_key) + ".pub").read_text().split()
    changed = tmp_path / "known_hosts_changed"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    unknown = tmp_path / "known_hosts_empty"
    unknown.write_text("")
    (remote_dir / "a.csv").write_bytes(b"1\n")
    for channel, known in (("changed", changed), ("unknown", unknown)):
        source = make_source(db, tmp_path, sshd, remote_dir, channel=channel, known_hosts=str(known))
        source.start()
        running.append(source)
        wait_for(lambda s=source: s.status.state == "refused", "refused")  # type: ignore[misc]
        time.sleep(0.5)  # several poll intervals and backoffs would have passed
        assert source.conn.attempts == 1
        err = source.status.last_error or ""
        assert "127.0.0.1" in err and "SHA256:" in err and "refusing" in err
    assert "CHANGED" in (running[0].status.last_error or "")
    assert "not in known_hosts" in (running[1].status.last_error or "")
    assert landed(db, "changed") == [] and landed(db, "unknown") == []
    assert (remote_dir / "a.csv").exists()


def test_wrong_credentials_clear_error_no_tight_loop(db: Database, tmp_path: Path, sshd: SshServer,
                                                     remote_dir: Path, running: list[SftpSource],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)
    monkeypatch.setenv("BRIDGE_TEST_SFTP_PASSWORD", "wrong-password")
    wrong_key = make_source(db, tmp_path, sshd, remote_dir, channel="wrong_key", key_file=str(stranger))
    wrong_pw = make_source(db, tmp_path, sshd, remote_dir, channel="wrong_pw", key_file=None,
                           password_env="BRIDGE_TEST_SFTP_PASSWORD")
    for s in (wrong_key, wrong_pw):
        s.start()
        running.append(s)
    for s in (wrong_key, wrong_pw):
        wait_for(lambda s=s: s.status.state == "refused", "refused")  # type: ignore[misc]
    time.sleep(0.5)
    assert wrong_key.conn.attempts == 1 and wrong_pw.conn.attempts == 1
    assert "authentication as 'root' on 127.0.0.1" in (wrong_key.status.last_error or "")
    assert "wrong-password" not in (wrong_pw.status.last_error or "")
    assert wrong_key.status.extra["next_retry_in"] >= 600


def test_sshd_killed_mid_download_no_partial_land_then_lands_once(
        db: Database, tmp_path: Path, ssh_root: Path, user_key: Path, remote_dir: Path,
        running: list[SftpSource]) -> None:
    server = SshServer(tmp_path / "sshd-kill", user_key).start()
    try:
        big = remote_dir / "big.bin"
        block = os.urandom(1024 * 1024)
        with open(big, "wb") as fh:
            for _ in range(48):
                fh.write(block)
        source = make_source(db, tmp_path, server, remote_dir, prefetch_requests=8, connect_timeout=3)
        source.start()
        running.append(source)

        def partial() -> bool:
            return any(p.stat().st_size > 2 * 1024 * 1024 for p in archive_temp_files(tmp_path))

        wait_for(partial, "a download in progress")
        server.kill()
        wait_for(lambda: source.status.state == "error", "the source notices")
        assert landed(db) == []
        assert big.exists()
        wait_for(lambda: archive_temp_files(tmp_path) == [], "temp file removed")
        assert remote_rows(db) == []  # the lease was given back
        server.start()
        wait_for(lambda: len(landed(db)) == 1, "landed after the restart", timeout=60)
        [row] = landed(db)
        assert row.size == 48 * 1024 * 1024
        wait_for(lambda: not big.exists(), "the original deleted after landing")
        wait_for(lambda: source.status.state == "ok", "ok state")
        assert len(landed(db)) == 1
    finally:
        server.stop()


# -- configuration ---------------------------------------------------------------------


def test_config_refuses_insecure_and_ambiguous_settings() -> None:
    base = {"host": "h", "username": "u", "key_file": "k", "known_hosts": "kh", "path": "/in", "after": "delete"}
    cfg = SftpSource.Config(**base)
    assert cfg.port == 22
    with pytest.raises(ValidationError, match="known_hosts is required"):
        SftpSource.Config(**{**base, "known_hosts": None})
    assert SftpSource.Config(**{**base, "known_hosts": None, "insecure_auto_add_host_key": True})
    with pytest.raises(ValidationError, match="exactly one of key_file or password_env"):
        SftpSource.Config(**{**base, "password_env": "PW"})
    with pytest.raises(ValidationError, match="after must be"):
        SftpSource.Config(**{**base, "after": "move:"})
    with pytest.raises(ValidationError, match="extra"):
        SftpSource.Config(**{**base, "pasword": "x"})
