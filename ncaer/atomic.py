"""Atomic file writes: every file ncaer writes appears whole or not at all.

Two flavours. Sample files of a build go through the build's private tmp folder
(`write_bytes`), so a killed build leaves no partial file among its outputs and the
next run clears the tmp folder. Tables and reports (`write_text`, `write_csv`,
`replace_with`) are written beside their target, synced, and renamed over it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # build workers import this module; they need no pandas
    import pandas as pd


def write_bytes(path: str, data: bytes, tmp_dir: str) -> None:
    """Write bytes to `path` through a temporary file in `tmp_dir` (same filesystem) and a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
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
