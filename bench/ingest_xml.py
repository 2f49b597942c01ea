"""Benchmark: ingest cXML OrderRequests (10 lines each) through land + Processor on SQLite.

Three measurements, each in its own subprocess so its peak RSS is honest:

- ``feed``: one file holding N cXML envelopes (``parser.record_element: cXML``),
  landed once and processed (N PurchaseOrders + N events, committed in batches);
- ``files``: M separate cXML documents, each landed and processed as its own
  inbound file (what a supplier network posting one document at a time costs:
  a claim, a parse and a commit per document);
- ``--size-mb``: a feed of that many MB of OrderRequests streamed through the
  parser and the cXML mapping without a database (memory stays bounded).

Documents are rendered by ``mappings.cxml_outbound.render_order_request`` from
synthetic PurchaseOrders (invented vendors, items and amounts). Target
(issue 7): at least 1,000 documents/s on SQLite.

Usage::

    .venv/bin/python bench/ingest_xml.py [--docs 20000] [--files 2000] [--size-mb 300]

The machine is shared (2 cores, several engineers): figures are noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHANNEL = {
    "source": {"type": "folder", "path": "/nonexistent"},
    "parser": {"type": "xml", "root": ["cXML"]},
    "mapping": {"type": "cxml"},
}
FEED_CHANNEL = {**CHANNEL, "parser": {"type": "xml", "record_element": "cXML"}}
VENDOR_ID = "987654321"


def template() -> bytes:
    """One rendered OrderRequest with 10 lines; ``PO-TEMPLATE`` is replaced per document."""
    from mappings.canonical import PurchaseOrder, PurchaseOrderLine
    from mappings.cxml_outbound import CxmlVendorProfile, render_order_request

    lines = [PurchaseOrderLine(line_number=str(i + 1), item=f"1002{i:02d}", vendor_part=f"VP-{i:04d}",
                               description=f"Synthetic supply item {i}", quantity=Decimal(1 + i), unit="BX",
                               unit_price=Decimal("12.50"), cost_center="4410", need_by=date(2026, 12, 1))
             for i in range(10)]
    po = PurchaseOrder(po_number="PO-TEMPLATE", vendor="V-EXMED", order_date=date(2026, 11, 26),
                       total=Decimal("687.50"), ship_to="DOCK-MAIN", bill_to="AP-CENTRAL", lines=lines)
    profile = CxmlVendorProfile(from_identity="AN01000000099", to_identity=VENDOR_ID,
                                sender_identity="AN01000000099", shared_secret="bench-dummy")
    return render_order_request(po, profile, payload="PAYLOAD-TEMPLATE@bench.example")


def document(tpl: bytes, n: int) -> bytes:
    return tpl.replace(b"PO-TEMPLATE", b"PO-%08d" % n).replace(b"PAYLOAD-TEMPLATE", b"%d" % n)


def envelope_body(tpl: bytes, n: int) -> bytes:
    """The ``<cXML>`` element of a document, without the XML declaration and DOCTYPE."""
    doc = document(tpl, n)
    return doc[doc.index(b"<cXML"):] + b"\n"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(tmp: Path, channel: dict, name: str):  # type: ignore[no-untyped-def]
    from bridge.db import Database
    from bridge.pipeline.land import Archive
    from bridge.pipeline.process import Processor, build_channel
    from bridge.settings import ChannelConfig, ProcessingConfig
    from mappings.crosswalks import upsert_entries

    db = Database(f"sqlite:///{tmp / 'bench.db'}")
    db.upgrade()
    with db.write() as conn:
        upsert_entries(conn, "vendor", [{"source_code": VENDOR_ID, "target_code": "V-EXMED"}])
    archive = Archive(tmp / "archive")
    channels = {name: build_channel(name, ChannelConfig.model_validate(channel))}
    return db, archive, Processor(db, archive, channels, ProcessingConfig(batch_size=1000))


def run_feed(docs: int) -> dict:
    from bridge.pipeline.land import land

    tpl = template()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "feed.xml"
        with open(path, "wb") as out:
            out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<OrderBatch>\n')
            for n in range(docs):
                out.write(envelope_body(tpl, n))
            out.write(b"</OrderBatch>\n")
        size = path.stat().st_size
        db, archive, proc = _setup(tmp, FEED_CHANNEL, "feed")
        t0, c0 = time.perf_counter(), time.process_time()
        with open(path, "rb") as src:
            landed = land(db, archive, channel="feed", src=src, name="feed.xml")
        result = proc.process(landed.inbound_id)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert result is not None and result.records == docs, result
        return {"mode": "feed", "docs": docs, "mb": round(size / 2**20, 1), "seconds": round(elapsed, 2),
                "docs_per_s": round(docs / elapsed), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak_mb(), 1)}


def run_files(files: int) -> dict:
    tpl = template()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        db, archive, proc = _setup(tmp, CHANNEL, "cxml")
        from bridge.pipeline.land import land

        t0, c0 = time.perf_counter(), time.process_time()
        for n in range(files):
            landed = land(db, archive, channel="cxml", src=io.BytesIO(document(tpl, n)), name=f"po{n}.xml")
            result = proc.process(landed.inbound_id)
            assert result is not None and result.records == 1, result
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"mode": "files", "docs": files, "seconds": round(elapsed, 2), "docs_per_s": round(files / elapsed),
                "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak_mb(), 1)}


def run_big(size_mb: int) -> dict:
    from datetime import UTC, datetime

    from mappings.base import MappingContext
    from mappings.cxml import CxmlMapping, CxmlMappingConfig
    from parsers.xml import XmlParser, XmlParserConfig

    tpl = template()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.xml"
        n = 0
        with open(path, "wb") as out:
            out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<OrderBatch>\n')
            written = 0
            while written < size_mb * 2**20:
                chunk = b"".join(envelope_body(tpl, n + i) for i in range(500))
                out.write(chunk)
                written += len(chunk)
                n += 500
            out.write(b"</OrderBatch>\n")
        before = peak_mb()
        parser = XmlParser(XmlParserConfig(record_element="cXML"))
        mapping = CxmlMapping(CxmlMappingConfig(vendor_crosswalk="off"))
        ctx = MappingContext(channel="big", file_name="big.xml", inbound_id=0, received_at=datetime.now(UTC),
                             crosswalks=None)  # type: ignore[arg-type]
        t0, c0 = time.perf_counter(), time.process_time()
        count = 0
        with open(path, "rb") as src:
            for msg in parser.parse(src, name="big.xml"):
                mapping.map(msg, ctx)
                count += 1
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert count == n
        return {"mode": "big", "docs": count, "mb": round(path.stat().st_size / 2**20, 1),
                "seconds": round(elapsed, 2), "docs_per_s": round(count / elapsed), "cpu_s": round(cpu, 2),
                "rss_before_parse_mb": round(before, 1), "peak_rss_mb": round(peak_mb(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--docs", type=int, default=20_000, help="OrderRequests in the feed run")
    ap.add_argument("--files", type=int, default=2_000, help="separate documents in the files run (0: skip)")
    ap.add_argument("--size-mb", type=int, default=0, help="also stream a feed of this size (e.g. 300)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = {"feed": run_feed, "files": run_files, "big": run_big}[args.child]
        print(json.dumps(fn(args.n)))
        return
    runs = [("feed", args.docs)]
    if args.files:
        runs.append(("files", args.files))
    if args.size_mb:
        runs.append(("big", args.size_mb))
    print("cXML OrderRequest ingest, 10 lines per document, SQLite (shared 2-core machine: noisy)")
    for mode, n in runs:
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--n", str(n)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if mode == "feed":
            print(f"feed : {r['docs']:>7,} OrderRequests in one {r['mb']} MB file: {r['seconds']} s, "
                  f"{r['docs_per_s']:,} documents/s ({r['cpu_s']} s CPU), peak RSS {r['peak_rss_mb']} MB")
        elif mode == "files":
            print(f"files: {r['docs']:>7,} OrderRequests, one inbound file each: {r['seconds']} s, "
                  f"{r['docs_per_s']:,} documents/s ({r['cpu_s']} s CPU), peak RSS {r['peak_rss_mb']} MB")
        else:
            print(f"big  : {r['mb']} MB feed, {r['docs']:,} OrderRequests parsed+mapped (no database): "
                  f"{r['seconds']} s ({r['cpu_s']} s CPU), {r['docs_per_s']:,} documents/s, RSS {r['rss_before_parse_mb']} MB "
                  f"before parsing, peak {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
