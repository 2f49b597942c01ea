"""``bridge clients add|list|revoke``: API keys for the clients of the HTTP API.

``add`` prints the key once: only its SHA-256 is stored, so it cannot be shown
again (revoke and add a new one instead). See :mod:`bridge.api.keys`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.commands.common import database

__all__ = ["register"]


def _add(args: Any) -> int:
    from bridge.api.keys import create_client

    with database(args) as db:
        scopes = [s for s in args.scopes.split(",") if s.strip()]
        client_id, key = create_client(db, args.name, scopes, args.rate_limit)
    print(f"client {args.name!r} created (id {client_id}, scopes {','.join(sorted(set(s.strip() for s in scopes)))})")
    print(key)
    print("warning: this key is shown only once and is not stored; keep it now", file=sys.stderr)
    return 0


def _fmt(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _list(args: Any) -> int:
    from bridge.api.keys import list_clients

    with database(args) as db:
        clients = list_clients(db)
    print(f"{'NAME':<24} {'PREFIX':<12} {'STATUS':<8} {'RATE/MIN':<9} {'LAST USED':<21} SCOPES")
    for c in clients:
        rate = str(c.rate_limit_per_minute) if c.rate_limit_per_minute else "-"
        status = "revoked" if c.revoked else "active"
        print(f"{c.name:<24} brg_{c.key_prefix:<8} {status:<8} {rate:<9} {_fmt(c.last_used_at):<21} "
              f"{','.join(sorted(c.scopes))}")
    return 0


def _revoke(args: Any) -> int:
    from bridge.api.keys import revoke_client

    with database(args) as db:
        client = revoke_client(db, args.name)
    print(f"client {client.name!r} revoked at {_fmt(client.revoked_at)}")
    return 0


def register(sub: Any) -> None:
    from bridge.api.keys import KNOWN_SCOPES

    p = sub.add_parser("clients", help="manage API clients and their keys")
    csub = p.add_subparsers(dest="clients_command", metavar="ACTION", required=True)

    add = csub.add_parser("add", help="create a client and print its key (once)",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="scopes:\n" + "\n".join(f"  {k:<24}{v}" for k, v in KNOWN_SCOPES.items()))
    add.add_argument("name")
    add.add_argument("--scopes", required=True, help="comma-separated, e.g. records:read,events:read")
    add.add_argument("--rate-limit", type=int, default=None, metavar="N", help="requests per minute")
    add.set_defaults(func=_add)

    ls = csub.add_parser("list", help="list clients (never their keys)")
    ls.set_defaults(func=_list)

    rv = csub.add_parser("revoke", help="revoke a client's key")
    rv.add_argument("name")
    rv.set_defaults(func=_revoke)
