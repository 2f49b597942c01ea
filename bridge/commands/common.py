"""What the CLI commands share: their database, opened and closed, and the operator they act as."""

from __future__ import annotations

import argparse
import contextlib
import getpass
from collections.abc import Iterator

from bridge.db import Database

__all__ = ["actor", "database"]


def actor() -> str:
    """Who an audited CLI action is by: ``cli:<user>`` (``cli:unknown`` where the user has no passwd entry,
    as in some containers)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[Database]:
    """The configured database, upgraded, for one command; its connections are closed when the command is done
    (run in process, a command would otherwise leave a pooled connection open)."""
    db = Database(args.settings().database_url)
    try:
        db.upgrade()
        yield db
    finally:
        db.dispose()
