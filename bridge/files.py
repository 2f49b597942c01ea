"""File-system durability shared by the archive and the file destinations."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(folder: str | Path) -> None:
    """Sync a folder, so that the names created or renamed in it survive a power loss.

    ``fsync`` of a file makes its bytes durable, not its name (POSIX): a file
    renamed into place is only there after a crash once its folder is synced.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
