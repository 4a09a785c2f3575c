"""Atomic file writes: every file ncaer writes appears whole or not at all.

Two flavours. Sample files of a build go through the build's private tmp folder
(`write_bytes`), so a killed build leaves no partial file among its outputs and the
next run clears the tmp folder. Tables and reports (`write_text`, `write_csv`,
`replace_with`) are written beside their target, synced, and renamed over it.

Temporary files are created with mode 0666 less the umask, as `open` makes files
(`tempfile.mkstemp` makes them 0600, which left a whole dataset unreadable to other
users and to a shared training job).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # build workers import this module; they need no pandas
    import pandas as pd


def _create_temporary(folder: str | Path, prefix: str = "") -> tuple[int, str]:
    """A new file (O_EXCL: never someone else's) with a random name, mode 0666 less the umask."""
    while True:
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}.part")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def write_bytes(path: str, data: bytes, tmp_dir: str) -> None:
    """Write bytes to `path` through a temporary file in `tmp_dir` (same filesystem) and a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = _create_temporary(tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def replace_with(path: str | Path, write: Callable[[str], None]) -> None:
    """Let `write(tmp)` write a temporary file beside `path`, sync it, and rename it to `path`."""
    path = Path(path)
    fd, tmp = _create_temporary(path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    replace_with(path, lambda p: df.to_csv(p, index=False))


def write_text(text: str, path: str | Path) -> None:
    def write(p):
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)

    replace_with(path, write)
