"""What the command modules share: the consoles, the default worker count, a parameter type and the identity
model's options."""

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


def identity_options(used_with: str, doc: str):
    """--identity-model and --identity-threshold (build and check-leakage), options of `used_with`."""
    def decorate(command):
        command = click.option(
            "--identity-threshold", default=None, type=click.FloatRange(0, min_open=True),
            help=f"{used_with}: embedding distance under which two clips show the same person "
                 f"[dlib 0.5, ArcFace 1.0; {doc}].")(command)
        return click.option(
            "--identity-model", default="dlib", show_default=True,
            help=f"{used_with}: dlib (ships with the extra), or ArcFace: an insightface model pack directory, a "
                 "pack name under ~/.insightface/models, or its recognition .onnx (never downloaded).")(command)
    return decorate
