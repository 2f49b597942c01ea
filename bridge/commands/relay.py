"""Relay commands: ``relay`` (the outbox relay alone), ``destinations status|pause|resume``, ``replay``.

``bridge relay`` runs only the relay (no sources, no processors, no API) until
SIGTERM or Ctrl-C, e.g. as extra relay processes next to a ``bridge run`` on the
same PostgreSQL. The operator actions are audited as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from datetime import datetime
from typing import Any

from bridge.commands.common import actor, database
from bridge.errors import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("relay", help="run the outbox relay alone until SIGTERM")
    p.add_argument("--workers", type=int, help="override relay.workers")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("destinations", help="delivery backlog per destination; pause and resume")
    dsub = p.add_subparsers(dest="destinations_command", metavar="ACTION")
    s = dsub.add_parser("status", help="backlog, oldest pending age, attempts and dead letters per destination")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    for action, helptext in (("pause", "stop delivering to NAME (events keep queueing)"),
                             ("resume", "deliver to NAME again")):
        a = dsub.add_parser(action, help=helptext)
        a.add_argument("name")
        if action == "pause":
            a.add_argument("--reason")
        a.set_defaults(func=cmd_pause if action == "pause" else cmd_resume)

    p = sub.add_parser("replay", help="deliver dead-lettered (or delivered) events again")
    p.add_argument("--destination", required=True)
    p.add_argument("--type", dest="event_type", help="event type, '*' wildcards allowed")
    p.add_argument("--key", help="ordering key (aggregate_type:aggregate_id) or aggregate id")
    p.add_argument("--since", type=_when, help="events created at or after (ISO 8601, UTC if no offset)")
    p.add_argument("--until", type=_when, help="events created before (ISO 8601)")
    p.add_argument("--status", choices=["dead", "delivered"], default="dead")
    p.add_argument("--reason")
    p.set_defaults(func=cmd_replay)


def _when(value: str) -> datetime:
    from datetime import UTC

    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def cmd_relay(args: argparse.Namespace) -> int:
    from bridge.runtime import freeze_startup_heap
    from outbox.relay import Relay

    settings = args.settings()
    config = settings.relay if args.workers is None else settings.relay.model_copy(update={"workers": args.workers})
    with database(args) as db:
        relay = Relay(db, settings.destinations, config)
        if not relay.targets:
            raise ConfigError("destinations", "no enabled destination is configured")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        relay.start()
        freeze_startup_heap()
        try:
            done.wait()
        finally:
            relay.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from outbox.relay import destination_status

    settings = args.settings()
    with database(args) as db:
        rows = destination_status(db, settings.destinations)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("name", "paused", "backlog", "oldest_pending_seconds", "retrying", "attempts", "dead", "delivered")
    heads = ("DESTINATION", "PAUSED", "BACKLOG", "OLDEST(s)", "RETRYING", "ATTEMPTS", "DEAD", "DELIVERED")
    table = [heads] + [tuple("-" if r[c] is None else str(r[c]) for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from outbox.relay import pause

    with database(args) as db:
        pause(db, args.name, args.reason, known=args.settings().destinations, actor=actor())
    print(f"paused {args.name}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from outbox.relay import resume

    with database(args) as db:
        resume(db, args.name, known=args.settings().destinations, actor=actor())
    print(f"resumed {args.name}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from outbox.relay import replay

    settings = args.settings()
    if args.destination not in settings.destinations:
        raise ConfigError(f"destinations.{args.destination}", "no such destination is configured")
    with database(args) as db:
        n = replay(db, args.destination, event_type=args.event_type, key=args.key, since=args.since,
                   until=args.until, status=args.status, actor=actor(), reason=args.reason)
    print(f"{n} deliveries to {args.destination} queued again")
    return 0
