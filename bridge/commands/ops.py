"""Operator commands: ``bridge crosswalk list|add|deactivate|import|reprocess`` and ``bridge failures resolve|ignore``.

The work is :mod:`bridge.ops`'s (shared with the API and the console), so each
action is audited as ``cli:<user>``. ``bridge failures list|show|reprocess`` are
in :mod:`bridge.commands.core`; this module adds ``resolve`` and ``ignore`` to
that group. ``bridge replay`` is the relay's (:mod:`bridge.commands.relay`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bridge import ops
from bridge.commands.common import actor, database
from bridge.db import Database

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("crosswalk", help="master-data crosswalks: search, add, deactivate, import")
    csub = p.add_subparsers(dest="crosswalk_command", metavar="ACTION")
    lp = csub.add_parser("list", help="entries, by kind and search text")
    lp.add_argument("kind", nargs="?")
    lp.add_argument("-q", "--search", help="text in source, target or description")
    lp.add_argument("--inactive", action="store_true", help="only inactive entries")
    lp.add_argument("--limit", type=int, default=200)
    lp.add_argument("--json", action="store_true")
    lp.set_defaults(func=cmd_list)
    ap = csub.add_parser("add", help="add or update one entry; says how many open failures it fixes")
    ap.add_argument("kind")
    ap.add_argument("source_code")
    ap.add_argument("target_code")
    ap.add_argument("--description", default="")
    ap.add_argument("--reason", default="")
    ap.add_argument("--reprocess", action="store_true", help="then reprocess the failures it fixes")
    ap.set_defaults(func=cmd_add)
    dp = csub.add_parser("deactivate", help="deactivate one entry")
    dp.add_argument("kind")
    dp.add_argument("source_code")
    dp.add_argument("--reason", default="")
    dp.set_defaults(func=cmd_deactivate)
    ip = csub.add_parser("import", help="bulk import a CSV (source_code,target_code[,description][,active])")
    ip.add_argument("kind")
    ip.add_argument("path", type=Path)
    ip.add_argument("--reason", default="")
    ip.add_argument("--reprocess", action="store_true", help="then reprocess the failures it fixes")
    ip.set_defaults(func=cmd_import)

    failures = sub.choices.get("failures")
    if failures is not None:
        fsub = next(a for a in failures._actions if isinstance(a, argparse._SubParsersAction))
        for action, help_text in (("resolve", "mark an open failure resolved, with a reason"),
                                  ("ignore", "mark an open failure ignored, with a reason")):
            sp = fsub.add_parser(action, help=help_text)
            sp.add_argument("id", type=int)
            sp.add_argument("--reason", required=True)
            sp.set_defaults(func=cmd_set_status, status="resolved" if action == "resolve" else "ignored")


def cmd_list(args: argparse.Namespace) -> int:
    with database(args) as db:
        rows = ops.crosswalk_search(db, args.kind, args.search, active=False if args.inactive else None,
                                    limit=args.limit)
    if args.json:
        print(json.dumps([{"kind": r.kind, "source_code": r.source_code, "target_code": r.target_code,
                           "description": r.description, "active": bool(r.active)} for r in rows], indent=2))
        return 0
    for r in rows:
        print(f"{r.kind}\t{r.source_code}\t{r.target_code}\t{'active' if r.active else 'inactive'}\t{r.description}")
    if not rows:
        print("no entries")
    return 0


def _report(args: argparse.Namespace, db: Database, out: dict[str, Any]) -> int:
    print(f"{out['count']} {out['kind']} entries saved; they fix {out['fixes']} open failures")
    if args.reprocess and out["fixes"]:
        ctx = ops.OpsContext.from_settings(args.settings(), db)
        s = ops.reprocess_fixed(ctx, out["kind"], out["codes"], actor=actor(), reason=args.reason or None)
        assert isinstance(s, ops.ReprocessSummary)
        print(f"reprocessed {s.messages} messages in {s.files} files: {s.resolved} resolved, "
              f"{s.failed_again} failed again" + (f", {s.busy} files busy" if s.busy else ""))
        return 0 if s.failed_again == 0 and s.busy == 0 else 1
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    with database(args) as db:
        out = ops.crosswalk_add(db, args.kind, [{"source_code": args.source_code, "target_code": args.target_code,
                                                 "description": args.description}],
                                actor=actor(), reason=args.reason or None)
        return _report(args, db, out)


def cmd_import(args: argparse.Namespace) -> int:
    try:
        text = args.path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        print(f"{args.path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    with database(args) as db:
        out = ops.crosswalk_import(db, args.kind, text, actor=actor(), reason=args.reason or None,
                                   where=str(args.path))
        return _report(args, db, out)


def cmd_deactivate(args: argparse.Namespace) -> int:
    with database(args) as db:
        ops.crosswalk_deactivate(db, args.kind, args.source_code, actor=actor(), reason=args.reason or None)
    print(f"{args.kind} {args.source_code} deactivated")
    return 0


def cmd_set_status(args: argparse.Namespace) -> int:
    with database(args) as db:
        ops.set_failure_status(db, args.id, args.status, actor=actor(), reason=args.reason)
    print(f"failure #{args.id} {args.status}")
    return 0
