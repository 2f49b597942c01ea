"""Core commands: ``run``, ``ingest``, ``db upgrade``, ``status``, ``failures``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, insert, select

from bridge.commands.common import actor, database
from bridge.db import utcnow
from bridge.db.tables import audit_log, failures, inbound_files
from bridge.errors import BridgeError, ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run sources, processors, relay and the API until SIGTERM")
    p.add_argument("--no-api", action="store_true", help="do not serve the HTTP API")
    p.add_argument("--host", help="override api.host")
    p.add_argument("--port", type=int, help="override api.port")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ingest", help="land and process a file now, as if dropped on CHANNEL")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--channel", required=True)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("db", help="database maintenance")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION")
    u = dsub.add_parser("upgrade", help="run the migrations up to the latest schema")
    u.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("status", help="files, failures and backlog per channel")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("failures", help="list, show and reprocess failed messages")
    fsub = p.add_subparsers(dest="failures_command", metavar="ACTION")
    lp = fsub.add_parser("list", help="open failures, newest first")
    lp.add_argument("--channel")
    lp.add_argument("--category", choices=["parse", "mapping", "master_data", "delivery"])
    lp.add_argument("--status", default="open", choices=["open", "resolved", "ignored", "all"])
    lp.add_argument("--limit", type=int, default=50)
    lp.add_argument("--json", action="store_true")
    lp.set_defaults(func=cmd_failures_list)
    sp = fsub.add_parser("show", help="one failure with its position")
    sp.add_argument("id", type=int)
    sp.set_defaults(func=cmd_failures_show)
    rp = fsub.add_parser("reprocess", help="re-run failed messages (one, or all matching a filter)")
    rp.add_argument("id", type=int, nargs="?", help="a failure id")
    rp.add_argument("--all", action="store_true", help="every open failure matching the filters")
    rp.add_argument("--channel")
    rp.add_argument("--category", choices=["parse", "mapping", "master_data", "delivery"])
    rp.add_argument("--file", type=int, dest="inbound_id", help="only this inbound file id")
    rp.add_argument("--reason", default="", help="why (kept in the audit log)")
    rp.set_defaults(func=cmd_failures_reprocess)


@contextlib.contextmanager
def _runtime(args: argparse.Namespace, *, with_sources: bool) -> Iterator[Any]:
    """A Runtime for one command; its database connections are closed when the command is done."""
    from bridge.runtime import Runtime

    runtime = Runtime(args.settings(), with_sources=with_sources)
    try:
        yield runtime
    finally:
        runtime.db.dispose()


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    from bridge.logging import configure
    from bridge.runtime import Runtime, freeze_startup_heap

    settings = args.settings()
    configure(settings.log_level, settings.log_format)
    runtime = Runtime(settings)
    runtime.start()
    try:
        if args.no_api:
            import threading

            freeze_startup_heap()  # with the API, serve() does it once the app is built
            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            signal.signal(signal.SIGINT, lambda *_: done.set())
            done.wait()
        else:
            from bridge.api.server import serve

            # one process, or api.workers processes; returns after SIGTERM/SIGINT
            serve(settings, runtime.db, runtime=runtime, host=args.host, port=args.port)
    finally:
        runtime.stop()
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    with _runtime(args, with_sources=False) as runtime:
        return _ingest(args, runtime)


def _ingest(args: argparse.Namespace, runtime: Any) -> int:
    from bridge.pipeline.process import Processor

    if args.channel not in runtime.channels:
        raise ConfigError("--channel", f"no enabled channel {args.channel!r} (have: {', '.join(sorted(runtime.channels))})")
    runtime.db.upgrade()
    runtime.seed_crosswalks()
    processor = Processor(runtime.db, runtime.archive, runtime.channels, runtime.settings.processing)
    rc = 0
    for path in args.paths:
        try:
            fh = open(path, "rb")
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            rc = 1
            continue
        with fh:
            landed = runtime.lander.land(channel=args.channel, src=fh, name=path.name, origin=f"cli:{path}")
        if landed.duplicate:
            print(f"{path}: duplicate of inbound file {landed.duplicate_of}; not processed again")
            continue
        result = processor.process(landed.inbound_id)
        if result is None:
            print(f"{path}: landed as inbound file {landed.inbound_id}; being processed by another process")
            continue
        print(f"{path}: inbound file {landed.inbound_id} {result.status}: {result.messages} messages, "
              f"{result.records} records, {result.events} events, {result.failures} failures")
        if result.status != "processed":
            rc = 1
    return rc


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    with database(args):
        print("database is at the latest schema")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = args.settings()
    with database(args) as db, db.read() as conn:
        files = conn.execute(
            select(inbound_files.c.channel, inbound_files.c.status, func.count())
            .group_by(inbound_files.c.channel, inbound_files.c.status)
        ).all()
        fails = conn.execute(
            select(failures.c.channel, failures.c.category, func.count())
            .where(failures.c.status == "open").group_by(failures.c.channel, failures.c.category)
        ).all()
    report: dict[str, Any] = {name: {"files": {}, "open_failures": {}} for name in settings.channels}
    for channel, status, n in files:
        report.setdefault(channel, {"files": {}, "open_failures": {}})["files"][status] = n
    for channel, category, n in fails:
        report.setdefault(channel, {"files": {}, "open_failures": {}})["open_failures"][category] = n
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, info in sorted(report.items()):
        files_s = ", ".join(f"{k} {v}" for k, v in sorted(info["files"].items())) or "no files"
        fail_s = ", ".join(f"{k} {v}" for k, v in sorted(info["open_failures"].items())) or "none"
        print(f"{name}: {files_s}; open failures: {fail_s}")
    return 0


def _failure_filter(args: argparse.Namespace) -> list[Any]:
    conds = []
    if getattr(args, "channel", None):
        conds.append(failures.c.channel == args.channel)
    if getattr(args, "category", None):
        conds.append(failures.c.category == args.category)
    if getattr(args, "inbound_id", None):
        conds.append(failures.c.inbound_id == args.inbound_id)
    return conds


def cmd_failures_list(args: argparse.Namespace) -> int:
    conds = _failure_filter(args)
    if args.status != "all":
        conds.append(failures.c.status == args.status)
    with database(args) as db, db.read() as conn:
        rows = conn.execute(
            select(failures, inbound_files.c.name).join(inbound_files, inbound_files.c.id == failures.c.inbound_id)
            .where(*conds).order_by(failures.c.id.desc()).limit(args.limit)
        ).all()
    if args.json:
        print(json.dumps([_failure_doc(r) for r in rows], indent=2, default=str))
        return 0
    if not rows:
        print("no failures")
        return 0
    for r in rows:
        print(f"#{r.id} [{r.status}] {r.channel} {r.category}: {r.reason} ({_where(r)})")
    return 0


def _where(r: Any) -> str:
    pos = orjson.loads(r.position or "{}")
    parts = [f"file {r.name!r} (inbound {r.inbound_id})"]
    if r.message_index >= 0:
        parts.append(f"message {r.message_index}")
    for k in ("line", "segment", "field"):
        if k in pos:
            parts.append(f"{k} {pos[k]}")
    return ", ".join(parts)


def _failure_doc(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "inbound_id": r.inbound_id, "file": r.name, "channel": r.channel,
        "message_index": r.message_index, "category": r.category, "reason": r.reason, "kind": r.kind,
        "key": r.key, "position": orjson.loads(r.position or "{}"), "status": r.status, "attempts": r.attempts,
        "created_at": r.created_at, "updated_at": r.updated_at,
    }


def cmd_failures_show(args: argparse.Namespace) -> int:
    with database(args) as db, db.read() as conn:
        r = conn.execute(
            select(failures, inbound_files.c.name).join(inbound_files, inbound_files.c.id == failures.c.inbound_id)
            .where(failures.c.id == args.id)
        ).first()
    if r is None:
        print(f"no failure #{args.id}", file=sys.stderr)
        return 1
    print(json.dumps(_failure_doc(r), indent=2, default=str))
    return 0


def cmd_failures_reprocess(args: argparse.Namespace) -> int:
    if args.id is None and not args.all:
        raise ConfigError("failures reprocess", "give a failure id, or --all with optional filters")
    with _runtime(args, with_sources=False) as runtime:
        return _reprocess(args, runtime)


def _reprocess(args: argparse.Namespace, runtime: Any) -> int:
    from bridge.pipeline.process import Processor

    db = runtime.db
    db.upgrade()
    conds = _failure_filter(args) + [failures.c.status == "open"]
    if args.id is not None:
        conds.append(failures.c.id == args.id)
    with db.read() as conn:
        rows = conn.execute(select(failures.c.inbound_id, failures.c.message_index).where(*conds)).all()
    if not rows:
        print("nothing to reprocess")
        return 0 if args.all else 1
    by_file: dict[int, set[int]] = {}
    for inbound_id, idx in rows:
        by_file.setdefault(inbound_id, set()).add(idx)
    processor = Processor(db, runtime.archive, runtime.channels, runtime.settings.processing)
    resolved = still = busy = 0
    for inbound_id, indexes in sorted(by_file.items()):
        try:
            result = processor.reprocess(inbound_id, indexes=indexes)
        except BridgeError as exc:
            print(f"inbound file {inbound_id}: {exc}", file=sys.stderr)
            continue
        if result is None:
            busy += 1
            continue
        resolved += result.resolved
        still += result.failures
    with db.write() as conn:
        conn.execute(insert(audit_log).values(
            at=utcnow(), actor=actor(), action="failures.reprocess",
            target=str(args.id) if args.id is not None else "filter", reason=args.reason or None,
            details=orjson.dumps({"files": len(by_file), "messages": len(rows), "resolved": resolved,
                                  "failed_again": still, "busy": busy}).decode()))
    print(f"reprocessed {len(rows)} failed messages in {len(by_file)} files: {resolved} resolved, "
          f"{still} failed again" + (f", {busy} files busy in another process" if busy else ""))
    return 0 if still == 0 and busy == 0 else 1
