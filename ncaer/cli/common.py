"""What the command modules share: the consoles, the default worker count, and a parameter type."""

from __future__ import annotations

import math
import os

import click
from rich.console import Console

console = Console(stderr=True)  # progress and notes
out_console = Console()  # results


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class InverseTemperature(click.ParamType):
    """A finite number >= 0 (click's FloatRange lets inf and nan through, which pool to NaN scores)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r}: a finite number >= 0 (0 pools by the mean)", param, ctx)
        return number
