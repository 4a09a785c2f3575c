"""What the command modules share: the consoles and the default worker count."""

from __future__ import annotations

import os

from rich.console import Console

console = Console(stderr=True)  # progress and notes
out_console = Console()  # results


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
