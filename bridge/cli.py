"""The ``bridge`` command line.

Each command group lives in its own module and registers its subcommands
through a ``register(subparsers)`` function listed in :data:`COMMANDS` (a table,
like the component registry). A command is ``func(args) -> int`` (the exit code);
``args.settings()`` loads the configuration lazily, so ``--help`` never needs it.

Errors: a :class:`~bridge.errors.ConfigError` prints ``config error: <key>: <reason>``
and exits 2; any other :class:`~bridge.errors.BridgeError` prints its message and
exits 1. No traceback reaches the operator unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bridge.errors import BridgeError, ConfigError
from bridge.registry import import_target

__all__ = ["COMMANDS", "main"]

#: "module:function" that add subcommands to the top-level subparsers
COMMANDS: list[str] = [
    "bridge.commands.core:register",
    "bridge.commands.clients:register",
    "bridge.commands.relay:register",
    "bridge.commands.x12:register",
    "bridge.commands.ops:register",
]


class _Args(argparse.Namespace):
    config: str | None
    debug: bool
    _settings: Any = None

    def settings(self) -> Any:
        if self._settings is None:
            from bridge.settings import load_settings

            self._settings = load_settings(self.config)
        return self._settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description="Legacy healthcare files and messages to a cloud ERP.")
    parser.add_argument("-c", "--config", help="bridge.yaml (default: $BRIDGE_CONFIG)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for target in COMMANDS:
        import_target(target)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv, namespace=_Args())
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
