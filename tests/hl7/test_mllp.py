"""The MLLP listener against real senders (python-hl7's ``mllp_send`` and ``MLLPClient``) on 127.0.0.1.

One Runtime per backend (SQLite, PostgreSQL) serves every test of this module
with several MLLP channels; each test uses its own control ids, so tests do
not see each other's messages.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hl7.client import MLLPClient
from sqlalchemy import func, select

from bridge.db.tables import failures, inbound_files, records
from bridge.pipeline.land import Unit, land, land_many
from bridge.pipeline.process import Processor
from bridge.runtime import Runtime
from tests.conftest import drop_pg_schema, make_pg_url
from tests.helpers import self_signed_cert, settings_for, wait_for
from tests.hl7.messages import DEPARTMENTS, ITEMS, SAMPLES, dft_p03

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
MLLP_SEND = Path(sys.executable).parent / "mllp_send"


def channel(**source: Any) -> dict[str, Any]:
    return {"source": {"type": "mllp", "port": 0, "max_message_bytes": 1024 * 1024, **source},
            "parser": {"type": "hl7"}, "mapping": {"type": "hl7_dft_p03"}}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp(f"mllp-{request.param}")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'bridge.db'}"
    else:
        url, schema = make_pg_url()
    seeds = []
    for kind, table in (("department", DEPARTMENTS), ("item", ITEMS)):
        path = tmp / f"{kind}.csv"
        path.write_text("source_code,target_code\n" + "".join(f"{k},{v}\n" for k, v in table.items()))
        seeds.append({"kind": kind, "file": str(path)})
    cert, key = self_signed_cert(tmp)
    settings = settings_for(tmp, url, {
        "dft": channel(idle_timeout=1.0),
        "dft_aa": channel(unknown_type_ack="AA"),
        "dft_tls": channel(tls_cert=str(cert), tls_key=str(key)),
        # a long gathering wait, so that senders released together are committed as one group
        "dft_group": channel(group_wait=1.0),
    }, crosswalks=seeds, processing={"workers": 1, "poll_seconds": 3600})
    runtime = Runtime(settings)
    runtime.start()
    runtime.cert = cert  # type: ignore[attr-defined]
    try:
        yield runtime
    finally:
        runtime.stop()
        runtime.db.dispose()
        if schema:
            drop_pg_schema(schema)


def port(rt: Runtime, name: str = "dft") -> int:
    p = rt.sources[name].port  # type: ignore[attr-defined]
    assert p
    return int(p)


def msa(ack: bytes | str) -> tuple[str, str, dict[str, list[str]]]:
    text = ack.decode() if isinstance(ack, bytes) else ack
    text = text.strip("\x0b\x1c\r\n")
    segs = {s.split("|", 1)[0]: s.split("|") for s in text.split("\r") if s}
    assert "MSH" in segs and segs["MSH"][8].startswith("ACK"), text
    return segs["MSA"][1], segs["MSA"][2], segs


def charges(rt: Runtime, control: str) -> list[Any]:
    with rt.db.read() as conn:
        return list(conn.execute(select(records.c.natural_key, records.c.data).where(
            records.c.type == "charge", records.c.data.contains(f'"control_id":"{control}"'))))


def landed(rt: Runtime, control: str) -> list[Any]:
    with rt.db.read() as conn:
        return list(conn.execute(select(inbound_files).where(inbound_files.c.name == f"mllp-{control}.hl7")
                                 .order_by(inbound_files.c.id)))


def test_mllp_send_cli_gets_aa_after_commit(rt: Runtime, tmp_path: Path) -> None:
    msgs = [dft_p03(f"CLI{i}", terminator="\r\n") for i in range(3)]
    f = tmp_path / "out.hl7"
    f.write_bytes(b"".join(msgs))
    out = subprocess.run([str(MLLP_SEND), "--loose", "-f", str(f), "-p", str(port(rt)), "127.0.0.1"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    acks = [a for a in out.stdout.split(b"\x0b") if a.strip()]
    assert [msa(a)[:2] for a in acks] == [("AA", f"CLI{i}") for i in range(3)]
    for i in range(3):
        assert len(charges(rt, f"CLI{i}")) == 3  # committed before the ACK was sent


def test_one_connection_many_messages_and_concurrent_senders(rt: Runtime) -> None:
    results: dict[int, list[tuple[str, str]]] = {}

    def sender(n: int) -> None:
        with MLLPClient("127.0.0.1", port(rt)) as client:
            results[n] = [msa(client.send_message(dft_p03(f"CON{n}-{i}")))[:2] for i in range(5)]

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[n] == [("AA", f"CON{n}-{i}") for i in range(5)] for n in range(8))


def test_unknown_message_type_is_landed_reported_and_acked_per_config(rt: Runtime) -> None:
    oru = (SAMPLES / "unknown_type_oru_r01.hl7").read_bytes()
    with MLLPClient("127.0.0.1", port(rt)) as client:
        code, ctl, segs = msa(client.send_message(oru.replace(b"ORU00001", b"ORU-AE")))
    assert (code, ctl) == ("AE", "ORU-AE")
    assert segs["ERR"][3].startswith("200^") and "not mapped" in segs["ERR"][8]
    with MLLPClient("127.0.0.1", port(rt, "dft_aa")) as client:
        assert msa(client.send_message(oru.replace(b"ORU00001", b"ORU-AA")))[:2] == ("AA", "ORU-AA")
    for ctl in ("ORU-AE", "ORU-AA"):
        [row] = landed(rt, ctl)
        with rt.db.read() as conn:
            [f] = conn.execute(select(failures).where(failures.c.inbound_id == row.id)).all()
        assert (f.kind, f.key) == ("message_type", "ORU^R01")


def test_mapping_failure_is_ae_with_reason_and_position(rt: Runtime) -> None:
    with MLLPClient("127.0.0.1", port(rt)) as client:
        code, ctl, segs = msa(client.send_message(dft_p03("MAPFAIL", department="NOWHERE")))
    assert (code, ctl) == ("AE", "MAPFAIL")
    err = segs["ERR"]
    assert err[2] == "FT1^1^13" and err[3].startswith("103^") and "NOWHERE" in err[8]
    assert len(landed(rt, "MAPFAIL")) == 1


def test_unreadable_message_is_landed_and_ar(rt: Runtime) -> None:
    bad = b"MSH|^~\\&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126||DFT^P03|NOTUTF8|P|2.5.1\rPID|1||X||TEST\xc9\r"
    with MLLPClient("127.0.0.1", port(rt)) as client:
        code, ctl, segs = msa(client.send_message(bad))
        assert (code, ctl) == ("AR", "NOTUTF8")
        assert segs["ERR"][2] == "PID^1^5"
        # the connection stays usable
        assert msa(client.send_message(dft_p03("AFTERAR")))[:2] == ("AA", "AFTERAR")
    assert len(landed(rt, "NOTUTF8")) == 1
    with MLLPClient("127.0.0.1", port(rt)) as client:
        code, ctl, _ = msa(client.send_message(b"PID|1||X\rPV1|1\r"))
    assert (code, ctl) == ("AR", "")


def test_duplicate_control_id_is_acked_aa_without_double_charge(rt: Runtime) -> None:
    with MLLPClient("127.0.0.1", port(rt)) as client:
        assert msa(client.send_message(dft_p03("DUPCTL", txn_prefix="first")))[0] == "AA"
        # regenerated by the sender: other bytes, same MSH-10
        assert msa(client.send_message(dft_p03("DUPCTL", txn_prefix="second")))[0] == "AA"
        # byte-identical resend
        assert msa(client.send_message(dft_p03("DUPCTL", txn_prefix="first")))[0] == "AA"
    rows = charges(rt, "DUPCTL")
    assert len(rows) == 3 and all(":first-" in r.natural_key for r in rows)
    assert rt.sources["dft"].status.extra["duplicate_control_ids"] >= 1


def test_crash_between_landing_and_ack_then_resend(rt: Runtime) -> None:
    # bridge landed the message and died before processing and ACKing it: the row waits as "landed"
    data = dft_p03("CRASH1")
    import io

    first = land(rt.db, rt.archive, channel="dft", src=io.BytesIO(data), name="mllp-CRASH1.hl7")
    with rt.db.read() as conn:
        assert conn.execute(select(inbound_files.c.status).where(inbound_files.c.id == first.inbound_id)
                            ).scalar_one() == "landed"
    with MLLPClient("127.0.0.1", port(rt)) as client:
        assert msa(client.send_message(data))[:2] == ("AA", "CRASH1")
    assert len(charges(rt, "CRASH1")) == 3
    # and after processing, before the ACK: the resend is a duplicate, ACKed AA, nothing doubles
    with MLLPClient("127.0.0.1", port(rt)) as client:
        assert msa(client.send_message(data))[:2] == ("AA", "CRASH1")
    assert len(charges(rt, "CRASH1")) == 3
    rows = landed(rt, "CRASH1")
    assert [r.status for r in rows] == ["processed", "duplicate", "duplicate"]


def raw_connect(rt: Runtime, name: str = "dft") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port(rt, name)), timeout=30)
    return s


def recv_frame(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(EB + CR):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_frame_without_end_block_is_dropped_and_idle_connection_closed(rt: Runtime) -> None:
    with raw_connect(rt) as s:
        s.sendall(SB + dft_p03("NOEND1"))
        # idle_timeout (1 s on this channel) closes the connection: recv sees EOF, no ACK
        assert s.recv(1024) == b""
    with raw_connect(rt) as s:
        # a new start block before the end block abandons the partial frame
        s.sendall(SB + dft_p03("NOEND2") + SB + dft_p03("AFTER2") + EB + CR)
        assert msa(recv_frame(s))[:2] == ("AA", "AFTER2")
    assert landed(rt, "NOEND1") == [] and landed(rt, "NOEND2") == []
    assert rt.sources["dft"].status.extra["incomplete_frames"] >= 2


def test_a_stalled_or_slow_sender_does_not_hold_up_the_others(rt: Runtime) -> None:
    """One engine stops in the middle of a frame, another trickles its message in over 1.5 s: a third,
    on the same listener, still gets each ACK at once (each connection is read on its own, and a
    gathering group waits at most group_wait for a connection that has no message in)."""
    trickled: list[tuple[str, str]] = []
    with raw_connect(rt, "dft_aa") as stalled, raw_connect(rt, "dft_aa") as slow:
        stalled.sendall(SB + dft_p03("STALLED")[:200])  # and nothing more

        def trickle() -> None:
            data = SB + dft_p03("TRICKLE") + EB + CR
            for i in range(0, len(data), len(data) // 15 + 1):
                slow.sendall(data[i : i + len(data) // 15 + 1])
                time.sleep(0.1)
            trickled.append(msa(recv_frame(slow))[:2])

        sender = threading.Thread(target=trickle)
        sender.start()
        started = time.monotonic()
        with MLLPClient("127.0.0.1", port(rt, "dft_aa")) as client:
            acks = [msa(client.send_message(dft_p03(f"PROMPT{i}")))[:2] for i in range(20)]
        took = time.monotonic() - started
        assert acks == [("AA", f"PROMPT{i}") for i in range(20)]
        assert took < 1.0 and not trickled, f"20 messages took {took:.2f} s beside a stalled and a slow sender"
        sender.join(30)
        assert trickled == [("AA", "TRICKLE")]
    assert landed(rt, "STALLED") == [] and len(charges(rt, "TRICKLE")) == 3


def test_a_message_type_without_trigger_is_answered(rt: Runtime) -> None:
    """MSH-9 ``DFT`` alone: reading the ACK's header once raised IndexError outside the group's guard, and
    every sender of that group waited for an answer that never came."""
    with raw_connect(rt) as s:
        s.settimeout(10)
        s.sendall(SB + dft_p03("NOTRIG").replace(b"DFT^P03^DFT_P03", b"DFT").replace(b"DFT^P03", b"DFT") + EB + CR)
        code, ctl, _segs = msa(recv_frame(s))
        assert code in ("AE", "AR") and ctl == "NOTRIG"
        s.sendall(SB + dft_p03("AFTERNOTRIG") + EB + CR)
        assert msa(recv_frame(s))[:2] == ("AA", "AFTERNOTRIG")


def test_every_sender_of_a_group_is_answered_whatever_fails(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure outside the group's own guard (here: reading the ACK's header) still answers each sender AE."""
    from bridge.sources import mllp

    def broken(data: bytes) -> None:
        raise IndexError("a bug")

    monkeypatch.setattr(mllp, "header_from_bytes", broken)
    with raw_connect(rt) as s:
        s.settimeout(10)
        s.sendall(SB + dft_p03("BUGGY") + EB + CR)
        code, _ctl, segs = msa(recv_frame(s))
    assert code == "AE" and "resend later" in segs["MSA"][3]
    assert landed(rt, "BUGGY") == []  # nothing stored: the sender keeps it and resends


def test_fifty_megabyte_message_is_ar_and_not_landed(rt: Runtime) -> None:
    with rt.db.read() as conn:
        before = conn.execute(select(func.count()).select_from(inbound_files)).scalar_one()
    big = dft_p03("BIG50").replace(b"EVN|P03|", b"ZBG|" + b"A" * (50 * 1024 * 1024) + b"\rEVN|P03|")
    with raw_connect(rt) as s:
        s.sendall(SB + big + EB + CR)
        code, ctl, segs = msa(recv_frame(s))
        assert (code, ctl) == ("AR", "BIG50") and "larger than the limit" in segs["ERR"][8]
        s.sendall(SB + dft_p03("AFTERBIG") + EB + CR)
        assert msa(recv_frame(s))[:2] == ("AA", "AFTERBIG")
    with rt.db.read() as conn:
        after = conn.execute(select(func.count()).select_from(inbound_files)).scalar_one()
    assert after == before + 1  # only AFTERBIG


def test_tls(rt: Runtime) -> None:
    ctx = ssl.create_default_context(cafile=str(rt.cert))  # type: ignore[attr-defined]
    with socket.create_connection(("127.0.0.1", port(rt, "dft_tls")), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for i in range(2):
                s.sendall(SB + dft_p03(f"TLS{i}") + EB + CR)
                assert msa(recv_frame(s))[:2] == ("AA", f"TLS{i}")


# -- group commit ---------------------------------------------------------------------


def send_together(rt: Runtime, msgs: dict[str, bytes], name: str = "dft_group") -> dict[str, tuple[str, str]]:
    """Send each message from its own connection, all released at once; each sender's (MSA-1, MSA-2)."""
    results: dict[str, tuple[str, str]] = {}
    barrier = threading.Barrier(len(msgs))

    def send(key: str) -> None:
        with MLLPClient("127.0.0.1", port(rt, name)) as client:
            barrier.wait(30)
            results[key] = msa(client.send_message(msgs[key]))[:2]

    threads = [threading.Thread(target=send, args=(key,)) for key in msgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_senders_in_one_group_get_their_own_acks(rt: Runtime) -> None:
    src = rt.sources["dft_group"]
    groups_before = src.status.extra["groups"]
    msgs = {f"GRP{n}": dft_p03(f"GRP{n}") for n in range(6)}
    msgs["GRP-AE"] = dft_p03("GRP-AE", department="NOWHERE")
    msgs["GRP-AR"] = b"MSH|^~\\&|BILLSYS|GENHOSP|BRIDGE|ERP|20261126||DFT^P03|GRP-AR|P|2.5.1\rPID|1||X||TEST\xc9\r"
    results = send_together(rt, msgs)
    assert results == {key: ("AE" if key == "GRP-AE" else "AR" if key == "GRP-AR" else "AA", key) for key in msgs}
    # committed together, not one by one
    assert src.status.extra["groups"] - groups_before < len(msgs)
    for n in range(6):
        assert len(charges(rt, f"GRP{n}")) == 3
        assert [r.status for r in landed(rt, f"GRP{n}")] == ["processed"]
    assert charges(rt, "GRP-AE") == [] and [r.status for r in landed(rt, "GRP-AE")] == ["failed"]
    assert len(landed(rt, "GRP-AR")) == 1
    # each row settled as a file processed on its own would be: counts, progress, lease released
    settled = {key: [(r.status, r.message_count, r.record_count, r.failure_count, r.progress, r.claimed_by)
                     for r in landed(rt, key)] for key in msgs}
    assert settled == {key: [("failed", 1, 0, 1, 0, None)] if key == "GRP-AE" else
                       [("failed", 1, 0, 1, 0, None)] if key == "GRP-AR" else
                       [("processed", 1, 3, 0, 0, None)] for key in msgs}
    with rt.db.read() as conn:
        opened = conn.execute(select(failures.c.inbound_id, failures.c.category, failures.c.status).where(
            failures.c.inbound_id.in_([r.id for key in ("GRP-AE", "GRP-AR") for r in landed(rt, key)]))).all()
    assert sorted((row.category, row.status) for row in opened) == [("master_data", "open"), ("parse", "open")]


def test_a_group_logs_one_line_and_each_failed_message_its_own(rt: Runtime,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """At 1,000 messages/s a line per message would be noise (and CPU): the group gets one INFO line with its
    counts; a message that failed still gets its own, naming its row; a clean one only at DEBUG."""
    msgs = {f"LOG{n}": dft_p03(f"LOG{n}") for n in range(3)}
    msgs["LOG-AE"] = dft_p03("LOG-AE", department="NOWHERE")
    with caplog.at_level("INFO"):
        results = send_together(rt, msgs)
    assert results == {key: ("AE" if key == "LOG-AE" else "AA", key) for key in msgs}
    ours = [r for r in caplog.records if getattr(r, "channel", None) == "dft_group"]
    groups = [r for r in ours if r.getMessage() == "mllp group processed"]
    assert sum(r.messages for r in groups) == 4  # type: ignore[attr-defined]
    assert sum(getattr(r, "processed", 0) for r in groups) == 3 and sum(getattr(r, "failed", 0) for r in groups) == 1
    per_message = [r for r in ours if r.getMessage() == "processed"]
    [failed] = landed(rt, "LOG-AE")
    assert [(r.inbound_id, r.status) for r in per_message] == [(failed.id, "failed")]  # type: ignore[attr-defined]


def test_same_control_id_twice_in_one_group_charges_once(rt: Runtime) -> None:
    msgs = {"first": dft_p03("GRPDUP", txn_prefix="first"), "second": dft_p03("GRPDUP", txn_prefix="second"),
            "other": dft_p03("GRPDUP-OTHER")}
    results = send_together(rt, msgs)
    assert results == {"first": ("AA", "GRPDUP"), "second": ("AA", "GRPDUP"), "other": ("AA", "GRPDUP-OTHER")}
    rows = charges(rt, "GRPDUP")
    # one of the two won; the other was recorded as a duplicate control id and charged nothing
    assert len(rows) == 3 and len({r.natural_key.split(":")[1].split("-")[0] for r in rows}) == 1
    assert len(charges(rt, "GRPDUP-OTHER")) == 3


def test_group_resend_after_a_crash_between_landing_and_ack(rt: Runtime) -> None:
    # a group landed; bridge processed only part of it and died before any ACK went out
    data = {key: dft_p03(key) for key in ("GRPCRASH-A", "GRPCRASH-B")}
    first = land_many(rt.db, rt.archive, channel="dft_group",
                      units=[Unit(msg, f"mllp-{key}.hl7") for key, msg in data.items()])
    done = Processor(rt.db, rt.archive, rt.channels).process_many([first[1].inbound_id])
    assert done[first[1].inbound_id].status == "processed"
    # the senders resend both, together with a new message
    data["GRPCRASH-NEW"] = dft_p03("GRPCRASH-NEW")
    results = send_together(rt, data)
    assert results == {key: ("AA", key) for key in data}
    for key in data:
        assert len(charges(rt, key)) == 3
    assert [r.status for r in landed(rt, "GRPCRASH-A")] == ["processed", "duplicate"]
    assert [r.status for r in landed(rt, "GRPCRASH-B")] == ["processed", "duplicate"]
    assert [r.status for r in landed(rt, "GRPCRASH-NEW")] == ["processed"]


def test_group_stops_waiting_once_every_connection_has_a_message_in(rt: Runtime) -> None:
    # dft_group waits up to 1 s for company; a lone sender (waiting for each ACK before it sends
    # again, as MLLP original mode does) can bring none, so its messages are not held that long
    src = rt.sources["dft_group"]
    groups_before = src.status.extra["groups"]
    started = time.monotonic()
    with MLLPClient("127.0.0.1", port(rt, "dft_group")) as client:
        acks = [msa(client.send_message(dft_p03(f"LONE{i}")))[:2] for i in range(3)]
    took = time.monotonic() - started
    assert acks == [("AA", f"LONE{i}") for i in range(3)]
    assert src.status.extra["groups"] - groups_before == 3
    assert took < 2.5, f"3 messages took {took:.2f} s: each waited group_wait (1 s) for company that cannot come"
    for i in range(3):
        assert len(charges(rt, f"LONE{i}")) == 3


def test_group_waits_for_an_open_connection_that_may_still_send(rt: Runtime) -> None:
    # a second connection is open and has sent nothing: the first message waits up to group_wait
    # for it, and when it sends in that time both are committed as one group
    src = rt.sources["dft_group"]
    with MLLPClient("127.0.0.1", port(rt, "dft_group")) as early, \
            MLLPClient("127.0.0.1", port(rt, "dft_group")) as late:
        # the listener has taken both connections (a connection still in the accept queue is not counted)
        wait_for(lambda: src.status.extra["open_connections"] >= 2)
        groups_before = src.status.extra["groups"]
        early.socket.sendall(SB + dft_p03("WAIT-EARLY") + EB + CR)
        time.sleep(0.2)
        assert msa(late.send_message(dft_p03("WAIT-LATE")))[:2] == ("AA", "WAIT-LATE")
        assert msa(recv_frame(early.socket))[:2] == ("AA", "WAIT-EARLY")
    assert src.status.extra["groups"] - groups_before == 1


def test_a_group_whose_processing_cannot_commit_is_landed_first_then_processed(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # landing and processing share one transaction; when processing's statements fail (here: once,
    # a storage error), nothing of that transaction stays, and the group is landed alone, then processed
    from bridge.errors import StorageError

    real = Processor.process_in
    calls: list[int] = []

    def failing_once(self: Processor, conn: Any, rows: Any, data: Any) -> Any:
        calls.append(len(rows))
        if len(calls) == 1:
            raise StorageError("database write failed: disk I/O error (injected)")
        return real(self, conn, rows, data)

    monkeypatch.setattr(Processor, "process_in", failing_once)
    data = dft_p03("TXNFALLBACK")
    with MLLPClient("127.0.0.1", port(rt)) as client:
        assert msa(client.send_message(data))[:2] == ("AA", "TXNFALLBACK")
    assert calls == [1]  # the fallback lands, then processes through process_many, not process_in
    assert len(charges(rt, "TXNFALLBACK")) == 3
    assert [r.status for r in landed(rt, "TXNFALLBACK")] == ["processed"]  # landed once, not twice
