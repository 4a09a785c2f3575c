"""`ncaer demo`: the whole chain on a corpus generated offline, each step the command a user would type."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import click
from rich.table import Table

from .common import console, default_workers, out_console

MARKER = ".ncaer-demo"  # says that OUT holds the demo's own outputs, which every run makes again


@click.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for everything the demo makes: OUT/CAER (corpus), OUT/NCAER-S (dataset), "
                   "OUT/leakage-report, OUT/runs/glamor (run and evaluation), OUT/cache (arrays).")
@click.option("--workers", default=default_workers, show_default="CPU count", type=click.IntRange(0))
@click.option("--frames", default=60, show_default=True, type=click.IntRange(1), help="Frames per demo clip.")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(1), help="Epochs of GLAMOR-Net training.")
@click.pass_context
def demo(ctx, out, workers, frames, epochs):
    """Run the whole chain offline on a small generated corpus: make a CAER-layout corpus from face
    photos that ship with installed packages, build NCAER-S from it, check it for leakage, train
    GLAMOR-Net for a few epochs and evaluate it. No download.

    Each step is printed as the command a user would type, and that command is what runs. A rerun
    makes every output again (the corpus is kept). OUT must be new, or a folder the demo made.
    """
    from ncaer.generated.demo import make_demo_corpus

    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise click.ClickException(f"{out} is not empty and has no {MARKER} mark of a demo folder, and the demo "
                                   "replaces its outputs there; choose another --out (a folder made by an earlier "
                                   "version of the demo has no mark: delete it)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `ncaer demo`, which makes these outputs again on every run\n")
    videos, dataset, report, run = out / "CAER", out / "NCAER-S", out / "leakage-report", out / "runs" / "glamor"
    root = ctx.find_root().command
    if not isinstance(root, click.Group):
        raise click.UsageError("the demo runs its steps through the `ncaer` command group: run it as `ncaer demo`")

    def step(number: int, args: list[str], exit_codes: tuple = (0,)) -> None:
        console.rule(f"[bold]step {number}/4", align="left")
        console.print("$ " + shlex.join(["ncaer", *args]), soft_wrap=True, markup=False, highlight=False)
        try:
            code = root.main(args, prog_name="ncaer", standalone_mode=False)
        except SystemExit as e:
            code = e.code
        if (code or 0) not in exit_codes:
            raise click.ClickException(f"step {number} ended with exit status {code}")

    if not videos.is_dir():
        console.print(f"making the demo corpus in {videos} ...")
        part = out / ".CAER.part"  # an interrupted demo leaves no half-made corpus behind
        shutil.rmtree(part, ignore_errors=True)
        make_demo_corpus(part, n_frames=frames)
        part.rename(videos)
    step(1, ["build", "--videos", str(videos), "--out", str(dataset), "--workers", str(workers), "--overwrite"])
    # check-leakage exits 1 when it finds leakage: the demo goes on and reports it below
    step(2, ["check-leakage", str(dataset), "--out", str(report), "--workers", str(max(workers, 1))], (0, 1))
    step(3, ["train", "--data", str(dataset), "--model", "glamor", "--epochs", str(epochs), "--out", str(run),
             "--cache-dir", str(out / "cache"), "--workers", str(max(workers, 1)), "--overwrite"])
    step(4, ["evaluate", "--run", str(run), "--attention-maps", "6"])

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
    out_console.print(f"next: {shlex.join(['ncaer', 'evaluate', '--run', str(run), '--video-level'])}; "
                      f"{shlex.join(['ncaer', 'predict', 'my_clip.mp4', '--run', str(run)])}", soft_wrap=True)
