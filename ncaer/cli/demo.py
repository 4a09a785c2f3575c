"""`ncaer demo`: the whole chain on a corpus generated offline, each step as the command a user would run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
from rich.table import Table

from .build import build
from .common import console, default_workers, out_console
from .leakage import check_leakage_cmd
from .train import evaluate, train


@click.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for everything the demo makes: OUT/CAER (corpus), OUT/NCAER-S (dataset), "
                   "OUT/leakage-report, OUT/runs/glamor (run and evaluation), OUT/cache (arrays).")
@click.option("--workers", default=default_workers, show_default="CPU count", type=click.IntRange(0))
@click.option("--frames", default=60, show_default=True, type=click.IntRange(1), help="Frames per demo clip.")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(1), help="Epochs of GLAMOR-Net training.")
@click.pass_context
def demo(ctx, out, workers, frames, epochs):
    """Run the whole chain offline on a small generated corpus: make a CAER-layout corpus from face
    photos that ship with installed packages, build NCAER-S from it, check it for leakage, train
    GLAMOR-Net for a few epochs and evaluate it. No download; rerunning starts the steps again."""
    from ncaer.generated.demo import make_demo_corpus

    videos, dataset, report, run = out / "CAER", out / "NCAER-S", out / "leakage-report", out / "runs" / "glamor"
    cache = out / "cache"

    _step(1, f"ncaer build --videos {videos} --out {dataset} --overwrite")
    if not videos.is_dir():
        console.print(f"making the demo corpus in {videos} ...")
        part = out / ".CAER.part"  # an interrupted demo leaves no half-made corpus behind
        shutil.rmtree(part, ignore_errors=True)
        make_demo_corpus(part, n_frames=frames)
        part.rename(videos)
    ctx.invoke(build, videos=videos, out=dataset, workers=workers, overwrite=True)

    _step(2, f"ncaer check-leakage {dataset} --out {report}")
    try:
        ctx.invoke(check_leakage_cmd, dataset=dataset, out=report, workers=max(workers, 1))
    except SystemExit as e:  # the command's exit status says whether leakage was found
        if e.code not in (0, 1):
            raise

    _step(3, f"ncaer train --data {dataset} --model glamor --epochs {epochs} --out {run} --cache-dir {cache} "
             "--overwrite")
    ctx.invoke(train, data=str(dataset), model="glamor", epochs=epochs, out=run, cache_dir=str(cache),
               overwrite=True)

    _step(4, f"ncaer evaluate --run {run} --attention-maps 6")
    ctx.invoke(evaluate, run=str(run), attention_maps=6)

    leak = json.loads((report / "report.json").read_text())
    results = json.loads((run / "eval-test" / "results.json").read_text())
    table = Table(title=f"demo outputs in {out}")
    table.add_column("what")
    table.add_column("where", overflow="fold")  # a path is never cut short
    table.add_row("corpus (generated)", str(videos))
    table.add_row("dataset manifest", str(dataset / "manifest.parquet"))
    table.add_row("leak report", f"{report / 'report.json'} ({'LEAKAGE FOUND' if leak['leaked'] else 'no leakage'})")
    table.add_row("training run", f"{run} (config.yaml, metrics.csv, best.pt)")
    table.add_row("evaluation", f"{run / 'eval-test' / 'results.json'} (test accuracy {results['accuracy']:.3f} "
                                f"after {epochs} epoch{'s' * (epochs != 1)}; chance 1/7)")
    table.add_row("confusion matrix", str(run / "eval-test" / "confusion_matrix.png"))
    table.add_row("attention maps", str(run / "eval-test" / "attention_maps.png"))
    out_console.print(table)
    out_console.print(f"next: ncaer evaluate --run {run} --video-level; ncaer predict my_clip.mp4 --run {run}")


def _step(number: int, command: str) -> None:
    console.rule(f"[bold]{number}/4[/] {command}", align="left")
