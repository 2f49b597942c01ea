"""Benchmark: HL7 v2 DFT^P03 ingest, as batch files and over MLLP. Prints figures; never a timed test.

    .venv/bin/python bench/ingest_hl7.py                 # 100,000 messages, 3 FT1 each
    .venv/bin/python bench/ingest_hl7.py -n 10000 --mllp-n 5000 --rate 1000

Figures:

1. parse only (messages/s): bridge's tokenizer over the batch bytes (just
   yielding messages, and also reading every field the DFT^P03 mapping
   reads), python-hl7 (``hl7.parse``) and hl7apy (``parse_message``,
   default and ``find_groups=False``) on a sample;
2. parse + map + commit (messages/s) of the batch files through the real
   Processor, on SQLite and on PostgreSQL;
3. MLLP: ``--senders`` sender processes, each one ``hl7.client.MLLPClient``
   connection, against a Runtime's listener in this process (so senders do
   not compete with it for its GIL), paced by schedule at ``--rate``
   messages/s in total (``--rate 0``: closed loop, each sender waits for its
   ACK and sends again). Each ACK's latency counts from the message's
   scheduled send time (no coordinated omission): p50/p99, the rate achieved,
   how many messages the listener's group commits held on average, and the
   CPU time per message of the bridge process (and of its PostgreSQL backends)
   and of the senders while sending (they share the machine's cores with it).

The machine is shared (2 cores, several engineers): figures are noisy.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.db import Database  # noqa: E402
from bridge.logging import configure  # noqa: E402
from bridge.pipeline.land import Archive, land  # noqa: E402
from bridge.pipeline.process import Processor, build_channel  # noqa: E402
from bridge.runtime import freeze_startup_heap  # noqa: E402
from bridge.settings import ChannelConfig, ProcessingConfig  # noqa: E402
from mappings.crosswalks import upsert_entries  # noqa: E402
from parsers.hl7 import HL7Parser  # noqa: E402
from tests.hl7.messages import DEPARTMENTS, ITEMS, batch, dft_p03  # noqa: E402

PG_URL = os.environ.get("BRIDGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def messages(n: int, ft1: int, tag: str) -> list[bytes]:
    return [dft_p03(f"{tag}{i:07d}", ft1=ft1) for i in range(n)]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} msg/s ({count:,} in {seconds:.2f} s)"


def bench_parse(msgs: list[bytes], sample: int, hl7apy_sample: int) -> None:
    data = b"".join(msgs)
    parser = HL7Parser()
    t = time.perf_counter()
    n = sum(1 for _ in parser.parse(io.BytesIO(data), name="bench"))
    print(f"  bridge tokenizer, messages only        {rate(n, time.perf_counter() - t)}")
    t = time.perf_counter()
    n = 0
    for env in parser.parse(io.BytesIO(data), name="bench"):
        m = env.data
        m.control_id, m.sender, m.value("PID-3"), m.value("PV1-19")  # noqa: B018
        for ft1 in m.segments("FT1"):
            for f in (2, 4, 5, 6, 7, 10, 11, 12, 13, 20, 21, 29):
                ft1.value(f)
        n += 1
    print(f"  bridge tokenizer + mapping's fields    {rate(n, time.perf_counter() - t)}")

    import hl7

    texts = [m.decode() for m in msgs[:sample]]
    t = time.perf_counter()
    for text in texts:
        msg = hl7.parse(text)
        for seg in msg.segments("FT1"):
            seg[10]  # noqa: B018
    print(f"  python-hl7 hl7.parse (sample)          {rate(len(texts), time.perf_counter() - t)}")

    from hl7apy.parser import parse_message

    few = texts[:hl7apy_sample]
    for find_groups in (True, False):
        t = time.perf_counter()
        for text in few:
            parse_message(text, find_groups=find_groups)
        print(f"  hl7apy parse_message find_groups={find_groups!s:<5} {rate(len(few), time.perf_counter() - t)}")


def seed(db: Database) -> None:
    with db.write() as conn:
        upsert_entries(conn, "department", [{"source_code": k, "target_code": v} for k, v in DEPARTMENTS.items()])
        upsert_entries(conn, "item", [{"source_code": k, "target_code": v} for k, v in ITEMS.items()])


def bench_commit(label: str, url: str, msgs: list[bytes], per_file: int, tmp: Path) -> None:
    db = Database(url)
    db.upgrade()
    seed(db)
    archive = Archive(tmp / f"archive-{label}")
    cfg = ChannelConfig.model_validate({"source": {"type": "folder", "path": str(tmp)}, "parser": {"type": "hl7"},
                                        "mapping": {"type": "hl7_dft_p03"}})
    proc = Processor(db, archive, {"bench": build_channel("bench", cfg)}, ProcessingConfig(batch_size=1000))
    files = [batch(msgs[i : i + per_file]) for i in range(0, len(msgs), per_file)]
    freeze_startup_heap()  # as bridge run does once started
    t = time.perf_counter()
    cpu = time.process_time()
    done = records = 0
    for i, data in enumerate(files):
        landed = land(db, archive, channel="bench", src=io.BytesIO(data), name=f"batch-{i}.hl7")
        result = proc.process(landed.inbound_id)
        assert result is not None and result.status == "processed", result
        done += result.messages
        records += result.records
    took = time.perf_counter() - t
    cpu = time.process_time() - cpu
    # CPU time is the steadier figure on a shared machine (PostgreSQL's server processes not included)
    print(f"  {label:<10} land+parse+map+commit  {rate(done, took)}; {records:,} charges, "
          f"{records / took:,.0f} records/s; this process's CPU {cpu / done * 10_000:.2f} s per 10,000 messages")
    db.dispose()


def _send(k: int, port: int, msgs: list[bytes], interval: float, offset: float, ready: Any, go: Any, start: Any,
          results: Any) -> None:
    """One MLLP sender in its own process: python-hl7's ``MLLPClient``, one ACK awaited per message.

    Paced (``interval`` > 0), message ``i`` is due at ``start + offset + i * interval`` and its
    latency counts from that time, not from when it went out: a late ACK delays the next send,
    and that wait is part of the next message's latency (no coordinated omission). Closed loop
    (``interval`` 0), each message goes out as soon as the previous ACK is in.
    """
    from hl7.client import MLLPClient

    clock = time.monotonic  # CLOCK_MONOTONIC: one clock for every process on Linux
    latencies: list[float] = []
    cpu = time.process_time()
    codes: dict[str, int] = {}
    try:
        with MLLPClient("127.0.0.1", port) as client:
            ready.wait()  # every sender connected
            go.wait()  # and the start time set after that: a start in the past would send a burst
            cpu = time.process_time()
            due = start.value + offset
            for m in msgs:
                if interval:
                    pause = due - clock()
                    if pause > 0:
                        time.sleep(pause)
                    t0 = due
                    due += interval
                else:
                    t0 = clock()
                ack = client.send_message(m)
                while not ack.endswith(b"\x1c\r"):  # MLLPClient reads once; an ACK may come in pieces
                    more = client.socket.recv(4096)
                    if not more:
                        raise ConnectionError("the listener closed the connection")
                    ack += more
                latencies.append(clock() - t0)
                code = ack.split(b"MSA|", 1)[1][:2].decode()
                codes[code] = codes.get(code, 0) + 1
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which would otherwise wait for it
        codes[f"sender {k} failed: {type(exc).__name__}: {exc}"] = 1
    results.put((latencies, codes, clock(), time.process_time() - cpu))


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _pg_backends(rt: Any) -> list[int]:
    """Pids of the PostgreSQL backends serving this bench's Runtime (its application_name)."""
    with rt.db.read() as conn:
        return list(conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'bench-mllp'").scalars())


def bench_mllp(url: str, msgs: list[bytes], senders: int, target_rate: float, tmp: Path, label: str,
               source: dict[str, Any]) -> None:
    """Section 3: ``senders`` processes, each one MLLP connection, against a Runtime's listener in this process.

    Only the Runtime runs here, so its CPU time over the run is the bridge's CPU
    per message; on PostgreSQL the CPU of its server backends is shown too.
    """
    import multiprocessing as mp

    from bridge.runtime import Runtime
    from bridge.settings import Settings

    seeds = []
    for kind, table in (("department", DEPARTMENTS), ("item", ITEMS)):
        path = tmp / f"{kind}.csv"
        path.write_text("source_code,target_code\n" + "".join(f"{k},{v}\n" for k, v in table.items()))
        seeds.append({"kind": kind, "file": str(path)})
    if url.startswith("postgresql"):
        url += ("&" if "?" in url else "?") + "application_name=bench-mllp"
    settings = Settings.model_validate({
        "database_url": url, "data_dir": str(tmp / f"var-{label}"), "crosswalks": seeds,
        "processing": {"workers": 1, "poll_seconds": 3600},
        "channels": {"mllp": {"source": {"type": "mllp", "port": 0, **source},
                              "parser": {"type": "hl7"}, "mapping": {"type": "hl7_dft_p03"}}},
    })
    rt = Runtime(settings)
    rt.start()
    try:
        freeze_startup_heap()  # as bridge run does
        listener = rt.sources["mllp"]
        # spawn, not fork: this process runs the listener's threads
        ctx = mp.get_context("spawn")
        ready, go, start, results = ctx.Barrier(senders + 1), ctx.Event(), ctx.Value("d", 0.0), ctx.Queue()
        spacing = 1 / target_rate if target_rate > 0 else 0.0
        procs = [ctx.Process(target=_send, args=(k, listener.port, msgs[k::senders], spacing * senders, spacing * k,
                                                ready, go, start, results), daemon=True) for k in range(senders)]
        for p in procs:
            p.start()
        ready.wait(120)
        start.value = time.monotonic() + 0.05
        go.set()
        before = {pid: _cpu([pid]) for pid in (_pg_backends(rt) if rt.db.is_postgres else [])}
        groups, cpu = listener.status.extra["groups"], time.process_time()
        done = [results.get(timeout=600) for _ in procs]
        cpu = time.process_time() - cpu
        # a backend opened during the run counts from 0; one closed during it is not seen (the pool keeps them)
        pg_cpu = sum(_cpu([pid]) - before.get(pid, 0.0) for pid in _pg_backends(rt)) if rt.db.is_postgres else 0.0
        groups = listener.status.extra["groups"] - groups
        for p in procs:
            p.join(10)
    finally:  # a failed run still stops the listener (and its connections, before the schema is dropped)
        rt.stop()
        rt.db.dispose()
    took = max(end for _lat, _codes, end, _used in done) - start.value
    # the senders' own CPU while sending (start-up left out): on the same two cores as bridge
    senders_cpu = sum(used for _lat, _codes, _end, used in done)
    codes: dict[str, int] = {}
    for _lat, got, _end, _used in done:
        for code, n in got.items():
            codes[code] = codes.get(code, 0) + n
    lat = sorted(x for sub, _codes, _end, _used in done for x in sub)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    target = f"target {target_rate:,.0f}/s" if target_rate > 0 else "closed loop"
    pg = f", PostgreSQL backends {pg_cpu / len(lat) * 1000:.2f} ms" if rt.db.is_postgres else ""
    print(f"  {label:<10} {senders} sender processes, {target}: achieved {rate(len(lat), took)}; "
          f"ACK p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms; {codes}; "
          f"{groups:,} group commits ({len(lat) / max(groups, 1):.1f} messages each); "
          f"CPU per message: bridge {cpu / len(lat) * 1000:.2f} ms{pg}, senders {senders_cpu / len(lat) * 1000:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="messages for parse and commit (default 100,000)")
    ap.add_argument("--ft1", type=int, default=3)
    ap.add_argument("--per-file", type=int, default=10_000, help="messages per batch file")
    ap.add_argument("--sample", type=int, default=500, help="python-hl7 sample size")
    ap.add_argument("--hl7apy-sample", type=int, default=200)
    ap.add_argument("--mllp-n", type=int, default=None, help="messages over MLLP (default: -n)")
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="total MLLP send rate, paced by schedule (0: closed loop, as fast as the ACKs come)")
    ap.add_argument("--group-max", type=int, default=None, help="MLLP source group_max (default: its default)")
    ap.add_argument("--group-wait", type=float, default=None, help="MLLP source group_wait, seconds")
    ap.add_argument("--concurrent-groups", type=int, default=None, help="MLLP source concurrent_groups (PostgreSQL)")
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL URL ('' to skip)")
    ap.add_argument("--skip", default="", help="comma list of: parse,sqlite,pg,mllp,mllp-pg")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"DFT^P03 x {args.n:,} ({args.ft1} FT1 each); {os.cpu_count()} CPUs, shared: figures are noisy")
    with tempfile.TemporaryDirectory(prefix="bench-hl7-") as tmpdir:
        tmp = Path(tmpdir)
        # log as `bridge run` does (INFO, JSON lines): what it logs per file, group or message is part of its cost
        log_file = (tmp / "bridge.log").open("w")
        configure("INFO", "json", stream=log_file)
        msgs = messages(args.n, args.ft1, "B")
        if "parse" not in skip:
            print("parse only:")
            bench_parse(msgs, args.sample, args.hl7apy_sample)
        print("parse + map + commit (batch files):")
        if "sqlite" not in skip:
            bench_commit("SQLite", f"sqlite:///{tmp / 'commit.db'}", msgs, args.per_file, tmp)
        schema = None
        if args.pg and "pg" not in skip:
            from tests.conftest import drop_pg_schema, make_pg_url

            url, schema = make_pg_url()
            try:
                bench_commit("PostgreSQL", url, msgs, args.per_file, tmp)
            finally:
                drop_pg_schema(schema)
        source = {key: value for key, value in (("group_max", args.group_max), ("group_wait", args.group_wait),
                                                ("concurrent_groups", args.concurrent_groups),
                                                ("workers", args.senders)) if value is not None}
        mllp_msgs = messages(args.mllp_n if args.mllp_n is not None else args.n, args.ft1, "M")
        print("MLLP (land + process + ACK per message, messages arriving together committed as a group):")
        if "mllp" not in skip:
            bench_mllp(f"sqlite:///{tmp / 'mllp.db'}", mllp_msgs, args.senders, args.rate, tmp, "SQLite",
                       source)
        if args.pg and "mllp-pg" not in skip:
            from tests.conftest import drop_pg_schema, make_pg_url

            url, schema = make_pg_url()
            try:
                bench_mllp(url, mllp_msgs, args.senders, args.rate, tmp, "PostgreSQL", source)
            finally:
                drop_pg_schema(schema)
        log_file.close()
        print(f"bridge's log: {sum(1 for _ in (tmp / 'bridge.log').open()):,} lines")


if __name__ == "__main__":
    main()
