"""`ncaer train`, `ncaer evaluate` and `ncaer ablation`: thin wrappers over `glamor_model`, imported
only when one of them runs, so the rest of the command line starts without torch."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import InverseTemperature, console, out_console


def _train_options(f):
    """Options shared by `train` and `ablation` (None: take the YAML config's value or the default)."""
    options = [
        click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
                     help="An `ncaer build` output, the NCAER-S release layout, or an image folder with --boxes."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML file of training options; options given here override it."),
        click.option("--boxes", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CSV image,x1,y1,x2,y2 of face boxes, for image-folder datasets (CAER-S)."),
        click.option("--recipe", type=click.Choice(["reference", "fast"]), default=None,
                     help="Where every option below not given comes from: the model's reference code, or a "
                          "faster recipe (large batch, lr scaled, bf16); docs/train.md lists both "
                          "[reference]."),
        click.option("--epochs", type=int, default=None, help="[recipe; glamor 60]"),
        click.option("--batch-size", type=int, default=None, help="Per process [recipe; glamor 4]."),
        click.option("--optimizer", type=click.Choice(["sgd", "adam", "amsgrad"]), default=None,
                     help="amsgrad: Adam's AMSGrad variant [recipe; glamor sgd]."),
        click.option("--lr", type=float, default=None, help="[recipe; glamor 5e-4]"),
        click.option("--momentum", type=float, default=None, help="SGD momentum [recipe; glamor 0.9]"),
        click.option("--nesterov/--no-nesterov", default=None, help="SGD with Nesterov momentum [recipe; glamor off]"),
        click.option("--weight-decay", type=float, default=None, help="[recipe; glamor 0]"),
        click.option("--milestones", default=None,
                     help="Epochs where lr is multiplied by --gamma [recipe; glamor 25,40]."),
        click.option("--gamma", type=float, default=None, help="[recipe; glamor 0.1]"),
        click.option("--min-lr", type=float, default=None, help="Where the drops stop [recipe; glamor 1e-5]"),
        click.option("--augment-face/--no-augment-face", default=None,
                     help="Random flip and rotation of the face in training [recipe; glamor on]."),
        click.option("--seed", type=int, default=None, help="[0]"),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:N [auto]"),
        click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default=None,
                     help="Mixed precision: auto is bf16 on CUDA, off on CPU [recipe; glamor off, as fp32]."),
        click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default=None,
                     help="[auto: on CUDA]"),
        click.option("--compile/--no-compile", "compile_", default=None,
                     help="torch.compile the augmentation and the model's forward and loss [off]."),
        click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead", "max-autotune"]), default=None,
                     help="torch.compile mode; reduce-overhead replays CUDA graphs, which small batches need "
                          "(one process only) [default]."),
        click.option("--normalize/--no-normalize", default=None,
                     help="ImageNet mean/std instead of pixels in 0..1 [recipe; glamor off]."),
        click.option("--face-size", type=int, default=None, help="[recipe; 96, caer-resnet18 160]"),
        click.option("--context-size", default=None, help="Context resize HxW before cropping [128x171]."),
        click.option("--crop", type=int, default=None, help="Context crop [112]."),
        click.option("--context-resize", type=click.Choice(["tf-bilinear", "area"]), default=None,
                     help="Context resize: tf.image.resize's bilinear, as GLAMOR-Net's reference, or OpenCV's "
                          "INTER_AREA (averages, no aliasing) [recipe; glamor tf-bilinear]."),
        click.option("--context-jpeg", type=click.IntRange(0, 100), default=None,
                     help="JPEG quality of the masked frame's re-encode before the resize, as GLAMOR-Net's "
                          "reference does; 0: none [recipe; glamor 95]."),
        click.option("--val-split", default=None, help="Split used to pick the best checkpoint [val]."),
        click.option("--image-size", type=int, default=None, help="FERAtt / preactresnet18: input size [128]."),
        click.option("--grayscale/--color", default=None, help="FERAtt / preactresnet18: one input channel [color]."),
        click.option("--fresh-composites/--stored-composites", default=None,
                     help="FERAtt / preactresnet18 on an `ncaer synth` output: render a new composite of each "
                          "training face on every draw, as FERAtt's reference [stored]."),
        click.option("--frames", type=int, default=None,
                     help="Video models: frames per clip; --data may then be a video corpus (built once) [8]."),
        click.option("--cache-dir", default=None, help="Where preprocessed arrays are kept [~/.cache/ncaer/arrays]."),
        click.option("--workers", type=int, default=None, help="Processes preprocessing images into the cache [2]."),
        click.option("--data-on-device", type=click.Choice(["auto", "on", "off"]), default=None,
                     help="Keep the uint8 arrays on the GPU [auto: when they fit]."),
        click.option("--loader-workers", type=click.IntRange(0), default=None,
                     help="Processes reading arrays kept on disk during training [4 on CUDA, 0 on the CPU]."),
        click.option("--log-every", type=click.IntRange(1), default=None,
                     help="Steps between progress updates; each waits for the GPU [50]."),
        click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across processes (torchrun)."),
        click.option("--backbone", type=click.Choice(["conv", "resnet18"]), default=None,
                     help="Video models: per-frame CNN, GLAMOR's face encoder or the ResNet-18 face branch "
                          "[conv]."),
        click.option("--face-weights", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="caer-resnet18 (required: its face-recognition weights), video models with --backbone "
                          "resnet18: torchvision-format ResNet-18 state dict for the face branch."),
        click.option("--bn-momentum", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="GLAMOR-Net and its variants: BatchNorm momentum in PyTorch's convention (the new "
                          "batch's share) [0.01: Keras' 0.99, as the reference; CAER-Net-S 0.1]."),
        click.option("--inv-temperature", type=InverseTemperature(), default=None,
                     help="video-tsp: inverse temperature of the temporal softmax over frame logits (0 = mean "
                          "pooling) [1, as the reference]."),
        click.option("--attention-weights", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="feratt, feratt-cls: torchvision-format ResNet-34 state dict for the attention "
                          "encoder (the paper uses ImageNet weights)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# options passed to the model's constructor; the registry says which models take which
MODEL_OPTIONS = ("backbone", "face_weights", "attention_weights", "bn_momentum", "inv_temperature")


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


@click.command()
@_train_options
@click.option("--model", default=None, help="Model name (see --list-models) [glamor].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory.")
@click.option("--context-face", type=click.Choice(["masked", "visible"]), default=None,
              help="Context input with the face masked (paper) or visible [masked].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--list-models", is_flag=True, help="List the models and exit.")
def train(config_file, resume, overwrite, list_models, **kw):
    """Train GLAMOR-Net, a baseline or a clip model on a dataset (by default with its reference recipe).

    Frame models read a static dataset; clip models (video-*) also take a video
    corpus directly (--data CAER/), built once into the cache with --frames segments.

    Writes OUT/config.yaml, metrics.csv (per epoch), best.pt (best on --val-split)
    and last.pt. Deterministic on the CPU; interrupting and running again with
    --resume gives the same weights as an uninterrupted run. Multi-GPU and
    multi-node: `torchrun --nproc_per_node N -m ncaer.cli train ...`.
    """
    from glamor_model.engine.config import load_config
    from glamor_model.engine.distributed import RankFailed
    from glamor_model.engine.loop import RunExists
    from glamor_model.engine.loop import train as run_training
    from glamor_model.models import describe, model_options
    from glamor_model.models import list_models as names

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
        except (RunExists, RankFailed, ValueError, FileNotFoundError) as e:
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


@click.command()
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
@click.option("--beta", default=None, type=InverseTemperature(),
              help="Temporal softmax pooling: frame weights softmax(beta * score); 0 = mean, large = max. "
                   "--video-level pools frame probabilities [5]; a clip model's comparison pools its frame "
                   "logits [its own inverse temperature].")
@click.option("--device", default="auto", show_default=True)
def evaluate(run, data, split, checkpoint, boxes, out, attention_maps, video_level, beta, device):
    """Evaluate a trained run: accuracy, per-class accuracy, macro-F1, confusion matrix (CSV, PNG),
    predictions.csv and results.json, optionally attention maps and clip-level figures."""
    from glamor_model.eval.evaluate import evaluate_run

    try:
        r = evaluate_run(run, data, split, checkpoint, out, attention_maps, boxes, device, video=video_level,
                         beta=beta)
    except (OSError, ValueError) as e:  # missing files, unreadable or unwritable folders, wrong data
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
        cmp_table = Table(title="clip accuracy by pooling of the same frame logits")
        cmp_table.add_column("pooling")
        cmp_table.add_column("accuracy", justify="right")
        for name, acc in r["pooling_comparison"].items():
            cmp_table.add_row(name, f"{acc:.4f}")
        out_console.print(cmp_table)
        if "inverse_temperature" in r:
            out_console.print(f"the model's inverse temperature: {r['inverse_temperature']:g}")
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


@click.command()
@_train_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the grid's runs.")
@click.option("--split", default="test", show_default=True, help="Split the cells are evaluated on.")
def ablation(config_file, out, split, **kw):
    """Train and evaluate the paper's Table 2 grid: face only; context only (face masked / visible);
    face + masked context; each context setting with no attention, CA and GLA (10 runs).

    Prints the table in the paper's form and saves OUT/ablation.csv and ablation.md.
    Rerun the same command to resume an interrupted grid.
    """
    from glamor_model.engine.config import load_config
    from glamor_model.eval.ablation import ATTENTION_NAMES, run_ablation

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
