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
3. MLLP: ``--senders`` concurrent ``hl7.client.MLLPClient`` connections
   against a Runtime's listener, paced at ``--rate`` messages/s in total;
   each ACK's round trip (send -> AA) gives p50/p99, plus the rate achieved
   and how many messages the listener's group commits held on average.

The machine is shared (2 cores, several engineers): figures are noisy.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.db import Database  # noqa: E402
from bridge.pipeline.land import Archive, land  # noqa: E402
from bridge.pipeline.process import Processor, build_channel  # noqa: E402
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
    t = time.perf_counter()
    done = records = 0
    for i, data in enumerate(files):
        landed = land(db, archive, channel="bench", src=io.BytesIO(data), name=f"batch-{i}.hl7")
        result = proc.process(landed.inbound_id)
        assert result is not None and result.status == "processed", result
        done += result.messages
        records += result.records
    took = time.perf_counter() - t
    print(f"  {label:<10} land+parse+map+commit  {rate(done, took)}; {records:,} charges, "
          f"{records / took:,.0f} records/s")
    db.dispose()


def bench_mllp(url: str, msgs: list[bytes], senders: int, target_rate: float, tmp: Path, label: str) -> None:
    from hl7.client import MLLPClient

    from bridge.runtime import Runtime
    from bridge.settings import Settings

    seeds = []
    for kind, table in (("department", DEPARTMENTS), ("item", ITEMS)):
        path = tmp / f"{kind}.csv"
        path.write_text("source_code,target_code\n" + "".join(f"{k},{v}\n" for k, v in table.items()))
        seeds.append({"kind": kind, "file": str(path)})
    settings = Settings.model_validate({
        "database_url": url, "data_dir": str(tmp / f"var-{label}"), "crosswalks": seeds,
        "processing": {"workers": 1, "poll_seconds": 3600},
        "channels": {"mllp": {"source": {"type": "mllp", "port": 0, "workers": senders},
                              "parser": {"type": "hl7"}, "mapping": {"type": "hl7_dft_p03"}}},
    })
    rt = Runtime(settings)
    rt.start()
    port = rt.sources["mllp"].port  # type: ignore[attr-defined]
    latencies: list[list[float]] = [[] for _ in range(senders)]
    codes: dict[str, int] = {}
    per_sender = [msgs[i::senders] for i in range(senders)]
    interval = senders / target_rate if target_rate > 0 else 0.0
    start = time.perf_counter()

    def run(k: int) -> None:
        with MLLPClient("127.0.0.1", port) as client:
            due = time.perf_counter()
            for m in per_sender[k]:
                if interval:
                    due += interval
                    pause = due - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                t0 = time.perf_counter()
                ack = client.send_message(m)
                latencies[k].append(time.perf_counter() - t0)
                code = ack.split(b"MSA|", 1)[1][:2].decode()
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=run, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    groups = rt.sources["mllp"].status.extra["groups"]
    rt.stop()
    rt.db.dispose()
    lat = sorted(x for sub in latencies for x in sub)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(f"  {label:<10} {senders} senders, target {target_rate:,.0f}/s: achieved {rate(len(lat), took)}; "
          f"ACK p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms; {codes}; "
          f"{groups:,} group commits ({len(lat) / max(groups, 1):.1f} messages each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="messages for parse and commit (default 100,000)")
    ap.add_argument("--ft1", type=int, default=3)
    ap.add_argument("--per-file", type=int, default=10_000, help="messages per batch file")
    ap.add_argument("--sample", type=int, default=500, help="python-hl7 sample size")
    ap.add_argument("--hl7apy-sample", type=int, default=200)
    ap.add_argument("--mllp-n", type=int, default=None, help="messages over MLLP (default: -n)")
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--rate", type=float, default=1000.0, help="total MLLP send rate (0: as fast as possible)")
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL URL ('' to skip)")
    ap.add_argument("--skip", default="", help="comma list of: parse,sqlite,pg,mllp,mllp-pg")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"DFT^P03 x {args.n:,} ({args.ft1} FT1 each); {os.cpu_count()} CPUs, shared: figures are noisy")
    with tempfile.TemporaryDirectory(prefix="bench-hl7-") as tmpdir:
        tmp = Path(tmpdir)
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
        mllp_msgs = messages(args.mllp_n if args.mllp_n is not None else args.n, args.ft1, "M")
        print("MLLP (land + process + ACK per message, messages arriving together committed as a group):")
        if "mllp" not in skip:
            bench_mllp(f"sqlite:///{tmp / 'mllp.db'}", mllp_msgs, args.senders, args.rate, tmp, "SQLite")
        if args.pg and "mllp-pg" not in skip:
            from tests.conftest import drop_pg_schema, make_pg_url

            url, schema = make_pg_url()
            try:
                bench_mllp(url, mllp_msgs, args.senders, args.rate, tmp, "PostgreSQL")
            finally:
                drop_pg_schema(schema)


if __name__ == "__main__":
    main()
