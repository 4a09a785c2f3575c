"""The `ncaer` command line: one thin module per command group over the library's functions.

`ncaer` and `glamor_model` meet only here, and only inside the commands that need
torch, so `ncaer build --help` starts without importing it.
"""

from __future__ import annotations

import click

from ncaer import __version__

from .build import build
from .demo import demo
from .leakage import check_leakage_cmd
from .serve import export, predict
from .synth import synth
from .train import ablation, evaluate, train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ncaer")
def main():
    """Build leak-free static emotion datasets from labelled videos (NCAER-S from CAER),
    check datasets for train/test leakage, and train context-aware emotion models."""


for command in (build, check_leakage_cmd, train, evaluate, ablation, predict, export, synth, demo):
    main.add_command(command)
