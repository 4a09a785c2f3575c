"""`ncaer demo`: the whole chain on a corpus generated offline."""

from __future__ import annotations

from pathlib import Path

import click

from .build import build
from .common import console, default_workers


@click.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the demo corpus (OUT/CAER) and its build (OUT/NCAER-S).")
@click.option("--workers", default=default_workers, show_default="CPU count", type=click.IntRange(0))
@click.option("--frames", default=60, show_default=True, type=click.IntRange(1), help="Frames per demo clip.")
@click.pass_context
def demo(ctx, out, workers, frames):
    """Make a small CAER-layout corpus offline (face photos shipped with installed packages)
    and build NCAER-S from it: the whole pipeline in one command, no download."""
    from ncaer.generated.demo import make_demo_corpus

    videos = out / "CAER"
    if not videos.exists():
        console.print(f"making the demo corpus in {videos} ...")
        make_demo_corpus(videos, n_frames=frames)
    ctx.invoke(build, videos=videos, out=out / "NCAER-S", workers=workers, overwrite=True)
