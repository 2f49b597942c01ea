"""X12 commands: ``x12 check`` (parse a file and show its errors and acks, no database) and
``x12 send-850`` (queue a PurchaseOrder as an 850 for a trading partner, through the outbox)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import ConfigError, InputError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("x12", help="X12 EDI: check a file, send an 850")
    xsub = p.add_subparsers(dest="x12_command", metavar="ACTION")
    c = xsub.add_parser("check", help="parse an X12 file; print each set's verdict and the TA1/999/997 it earns")
    c.add_argument("path", type=Path)
    c.add_argument("--acks", action="store_true", help="also print the acknowledgments' text")
    c.add_argument("--hipaa", action="store_true", help="validate 837/835 against the guides with pyx12 (slow)")
    c.set_defaults(func=cmd_check)
    s = xsub.add_parser("send-850", help="queue a PurchaseOrder (JSON file) as an 850 for PARTNER")
    s.add_argument("path", type=Path, help="a PurchaseOrder as JSON (the canonical record)")
    s.add_argument("--partner", required=True, help="a name under partners: in bridge.yaml")
    s.set_defaults(func=cmd_send_850)


def cmd_check(args: argparse.Namespace) -> int:
    from parsers.x12 import X12Parser
    from parsers.x12.acks import build_acks
    from parsers.x12.model import InterchangeReport

    parser = X12Parser(X12Parser.Config.model_validate({"validate": "hipaa" if args.hipaa else "none"}))
    numbers = count(1)
    bad = 0
    try:
        with open(args.path, "rb") as fh:
            for m in parser.parse(fh, name=args.path.name):
                if isinstance(m.data, InterchangeReport):
                    for doc in build_acks(m.data, next_control=lambda _k: next(numbers), now=datetime.now(UTC)):
                        print(f"ack {doc.kind} {doc.status} for interchange {m.data.interchange.control}")
                        if args.acks:
                            print(doc.content)
                    continue
                if m.error is not None:
                    bad += 1
                    print(f"#{m.index} {m.type} {m.control_id or ''}: {m.error}")
                else:
                    print(f"#{m.index} {m.meta.get('variant', m.type)} {m.control_id}: ok")
    except OSError as exc:
        print(f"{args.path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    except InputError as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    return 1 if bad else 0


def cmd_send_850(args: argparse.Namespace) -> int:
    from bridge.commands.common import database
    from mappings.canonical import PurchaseOrder
    from outbox.x12_outbound import emit_850

    settings = args.settings()
    partner = settings.partners.get(args.partner)
    if partner is None:
        raise ConfigError("--partner", f"no partner {args.partner!r} under partners: "
                                       f"(have: {', '.join(sorted(settings.partners)) or 'none'})")
    try:
        po = PurchaseOrder.model_validate(orjson.loads(args.path.read_bytes()))
    except OSError as exc:
        print(f"{args.path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{args.path}: not a PurchaseOrder: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    with database(args) as db, db.write() as conn:
        draft = emit_850(db, conn, po, args.partner, partner)
    print(f"queued {draft.payload['filename']} (interchange {draft.payload['interchange_control']})")
    return 0
