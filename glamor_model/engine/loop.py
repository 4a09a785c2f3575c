"""Training: the reference recipe (SGD momentum 0.9, lr 5e-4, x0.1 at epochs 25 and 40, floor
1e-5, 60 epochs, cross-entropy, best-on-validation checkpoint) with batch 32 by default.

Determinism: the model is initialised from `seed`; every epoch reseeds torch (dropout,
differently on each rank) and the batch order/augmentation from (seed, epoch). A run
interrupted and resumed from its last checkpoint therefore ends with the same weights as
an uninterrupted one (on the CPU; GPU kernels may differ in the last bits).

Multi-GPU / multi-node: start with `torchrun`; each process takes a shard of every
epoch (DistributedDataParallel); `batch_size` is per process. Rank 0 prepares the
caches while the others wait, reads the checkpoint and sends it to every rank, and
writes the run directory, so only the cache folder needs to be shared (or node-local).

Speed: a step never waits for the device. Loss and accuracy are summed on the device
and read every `log_every` steps; inputs arrive without blocking copies (batches.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import pickle
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from glamor_model.data.batches import Batches, ClipBatches, EpochBatches, ImageBatches
from glamor_model.data.composites import CompositeBatches, CompositeSource, composite_source
from glamor_model.data.datasets import read_dataset
from glamor_model.data.stores import cache_store, clip_store, default_cache_dir, image_store
from glamor_model.data.videos import ensure_build
from glamor_model.models import create_model, model_family
from glamor_model.models.feratt import reconstruction_figures
from glamor_model.models.glamor import LEGACY_KWARGS
from ncaer.atomic import write_text

from .checkpoint import CLIP_POOLING, load_model_state, refuse_old_clip_model, save_atomic
from .config import TrainConfig, check_config
from .device import amp_dtype, pick_device
from .distributed import Distributed, setup_distributed
from .optim import create_optimizer, create_scheduler
from .recipes import LEGACY_RECIPE

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "samples_per_s", "seconds"]
# what --overwrite removes before training starts: the old run's checkpoints, curve, options and evaluations
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "config.yaml")


def _write_metrics(rows: list[dict], path: Path) -> None:
    extra = sorted({k for r in rows for k in r} - set(METRIC_COLUMNS))  # per-term losses (train_ce, train_rec...)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, METRIC_COLUMNS + extra)
    writer.writeheader()
    writer.writerows(rows)
    write_text(buf.getvalue(), path)


class RunExists(RuntimeError):
    pass


def evaluate_batches(model, batches: Batches, autocast_dtype=None) -> tuple[float, float, dict[str, float]]:
    """Mean loss and accuracy over all batches (model in eval mode); for models that rebuild the face
    (FERAtt) also the mean reconstruction error and share of attention inside the face box."""
    model.eval()
    sums, n, rebuilds = torch.zeros(4, device=batches.device), 0, False  # loss, correct, rec, inside
    autocast = torch.autocast(batches.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.inference_mode(), autocast:
        for faces, contexts, labels, idx in batches.epoch(0):
            out = model(faces, contexts)
            logits = (out["logits"] if isinstance(out, dict) else out).float()
            sums[0] += F.cross_entropy(logits, labels, reduction="sum")
            sums[1] += (logits.argmax(1) == labels).sum()
            n += len(idx)
            if isinstance(out, dict) and "attended" in out:
                rec, inside = reconstruction_figures(out, contexts, batches.store.boxes[idx])
                sums[2:] += torch.stack([rec.sum(), inside.sum()])
                rebuilds = True
    loss, correct, rec, inside = (v / max(n, 1) for v in sums.tolist())
    return loss, correct, ({"rec": rec, "attention_in_face_box": inside} if rebuilds else {})


def _identity(names, labels) -> str:
    return hashlib.sha256(json.dumps([[str(n) for n in names], [int(y) for y in labels]]).encode()).hexdigest()[:16]


def _sample_identity(samples: pd.DataFrame) -> str:
    """The training samples, their labels and face boxes: what must not change when a run resumes."""
    return _identity([f"{s} {b}" for s, b in zip(samples["sample_id"], samples["box"])], samples["label_id"])


def _refuse_other_data(checkpoint: dict | None, saved: TrainConfig | None, config: TrainConfig,
                       identity: str) -> None:
    """On --resume the data may have moved, but must hold the same training samples: checked before any
    preprocessing, so a wrong --data fails at once. `saved` is the checkpoint's config."""
    if checkpoint is None:
        return
    if "data_identity" in checkpoint:
        if checkpoint["data_identity"] != identity:
            raise RunExists(f"--resume with other training data than the run was started with ({config.data} "
                            "does not hold the same training samples, labels and face boxes)")
    else:  # a run from before identities were kept: its data must be where it was
        if (saved.data, saved.boxes) != (config.data, config.boxes):
            raise RunExists("--resume with other options than the run was started with: data")


@dataclass
class Stores:
    """A run's prepared data: the array stores, classes and the training data's identity."""
    classes: list[str]
    identity: str
    train: object
    val: object | None


def _prepare_stores(config: TrainConfig, checkpoint: dict | None, saved: TrainConfig | None) -> Stores:
    """Read the dataset, check it against a resumed run's, and make (or open) its array stores."""
    cache_dir = config.cache_dir or default_cache_dir()
    prep, family = config.prep, model_family(config.model)
    if family == "video":
        build = ensure_build(config.data, config.frames, cache_dir, config.workers)
        classes = read_dataset(build).classes
        rows = pd.read_parquet(build / "manifest.parquet", columns=["split", "video_id", "label_id"])
        clips = rows[rows["split"] == "train"].groupby("video_id", sort=True)["label_id"].first()
        identity = _identity(clips.index, clips.to_numpy())
        _refuse_other_data(checkpoint, saved, config, identity)
        has_val = (rows["split"] == config.val_split).any()
        return Stores(classes, identity, clip_store(build, "train", config.frames, prep, cache_dir),
                      clip_store(build, config.val_split, config.frames, prep, cache_dir) if has_val else None)
    dataset = read_dataset(config.data, config.boxes)
    train_samples, val_samples = dataset.split("train"), dataset.split(config.val_split)
    if train_samples.empty:
        raise ValueError(f"{config.data} has no training samples")
    identity = _sample_identity(train_samples)
    _refuse_other_data(checkpoint, saved, config, identity)
    if family == "face-image":
        def make(samples):
            return image_store(samples, config.image_size, config.grayscale, cache_dir, config.workers)
        if config.fresh_composites:  # training renders its composites; validation reads the pre-rendered ones
            train = composite_source(config.data, train_samples, config.image_size, config.grayscale)
            return Stores(dataset.classes, identity, train, make(val_samples) if len(val_samples) else None)
    else:
        def make(samples):
            return cache_store(samples, prep, cache_dir, config.workers)
    return Stores(dataset.classes, identity, make(train_samples), make(val_samples) if len(val_samples) else None)


def _batches(config: TrainConfig, store, train: bool, device: torch.device, ddp: Distributed,
             channels_last: bool) -> EpochBatches:
    """The family's batches over a store: training ones sharded across ranks, validation ones whole."""
    family = model_family(config.model)
    shard = dict(rank=ddp.rank, world=ddp.world) if train else {}
    size = config.batch_size if train or family == "video" else config.batch_size * 2
    nbytes = sum(a.nbytes for a in (getattr(store, n, None) for n in ("faces", "contexts", "images", "targets"))
                 if a is not None)
    on_device = config.data_on_device == "on" or (
        config.data_on_device == "auto" and device.type == "cuda" and nbytes < 0.3 * torch.cuda.mem_get_info(device)[0])
    common = dict(device=device, seed=config.seed, on_device=on_device, loader_workers=config.loader_workers, **shard)
    if family == "video":
        return ClipBatches(store, size, train, normalize=config.normalize, **common)
    if isinstance(store, CompositeSource):
        return CompositeBatches(store, size, train, channels_last=channels_last, **common)
    if family == "face-image":
        return ImageBatches(store, size, train, channels_last=channels_last, **common)
    return Batches(store, config.prep, size, train, normalize=config.normalize, channels_last=channels_last,
                   augment_face=config.augment_face, **common)


def _start_run(out: Path, resume: bool, overwrite: bool) -> None:
    """Rank 0: refuse to replace a run by accident; with --overwrite, the old checkpoints go at once
    (a run stopped before its first epoch must not leave the old run's best.pt to be evaluated)."""
    if (out / "config.yaml").exists() and not resume and not overwrite:
        raise RunExists(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for evaluation in out.glob("eval-*"):
            shutil.rmtree(evaluation)


def _load_checkpoint(path: Path) -> dict | None:
    """A run's last.pt, tensors and plain values only: a file that would run code when read is refused."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RunExists(f"{path} holds more than tensors and plain values, so it is not read (a checkpoint "
                        f"of `ncaer train` never does): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError) as e:  # torch.load's errors for a truncated or foreign file
        raise RunExists(f"{path} cannot be read as a checkpoint ({str(e).splitlines()[0]}); restore it from a "
                        "backup, or start again with --overwrite") from e


class TrainStep:
    """One optimisation step from a batch of `EpochBatches.raw_epoch`: the inputs made (`make`:
    augmentation), forward under autocast, loss, backward, optimizer. Returns the loss and the step's
    sums (loss x samples, correct, then each extra loss term x samples, in the order of `terms`),
    left on the device.

    With `config.compile`, `make` and forward+loss are compiled; mode reduce-overhead replays
    them as CUDA graphs, which a small batch needs (launching its kernels one by one from Python
    takes longer than running them)."""

    def __init__(self, net, model, optimizer, config: TrainConfig, device: torch.device, make: Callable):
        self.net, self.model, self.optimizer, self.device = net, model, optimizer, device
        self.autocast_dtype = amp_dtype(config.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast_dtype == torch.float16)
        self.graphs = config.compile and config.compile_mode == "reduce-overhead"
        self.terms: list[str] = []

        def compiled(fn):  # dynamic=False: one graph per batch shape (the last, shorter batch gets its own)
            return torch.compile(fn, mode=config.compile_mode, dynamic=False) if config.compile else fn

        self.make, self.forward_loss = compiled(make), compiled(self._forward_loss)

    def _forward_loss(self, inputs, targets, labels):
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            result = self.net(inputs, targets)
            if isinstance(result, dict):  # models with several loss terms (FERAtt) compute them
                terms = self.model.loss_terms(result, targets, labels)
                loss, logits = terms.pop("loss"), result["logits"]
            else:
                terms, logits = {}, result
                loss = F.cross_entropy(logits.float(), labels)
        b = labels.shape[0]
        sums = torch.stack([loss.detach().float() * b, (logits.argmax(1) == labels).sum().float(),
                            *(terms[k].detach().float() * b for k in sorted(terms))])
        return loss, sums, sorted(terms)

    def __call__(self, arrays, draws, labels):
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        inputs, targets, labels = self.make(arrays, draws, labels)
        loss, sums, self.terms = self.forward_loss(inputs, targets, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, sums


def run_epoch(step: TrainStep, batches: EpochBatches, epoch: int, log_every: int = 50,
              on_step: Callable[[int, int, dict], None] | None = None, world: int = 1) -> dict:
    """Train one epoch; returns this rank's sums on the device ("sums", see `TrainStep`; "terms" names
    the extra loss terms) and its sample count. `on_step(step, steps, stats)` is called every
    `log_every` steps and at the end, the only times the host waits for the device."""
    sums, n, steps, t0 = None, 0, len(batches), time.perf_counter()
    for k, (arrays, draws, labels, idx) in enumerate(batches.raw_epoch(epoch)):
        _, step_sums = step(arrays, draws, labels)
        sums = step_sums.clone() if sums is None else sums.add_(step_sums)  # a copy: graphs reuse outputs
        n += len(idx)
        if on_step and ((k + 1) % log_every == 0 or k + 1 == steps):
            loss_sum, correct = sums[:2].tolist()
            on_step(k + 1, steps, {"epoch": epoch, "loss": loss_sum / n, "acc": correct / n,
                                   "samples_per_s": n * world / (time.perf_counter() - t0)})
    return {"sums": sums, "terms": step.terms, "samples": n}


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Dropout draws: a function of (seed, epoch) so a resumed run repeats them; different on each rank,
    which would otherwise drop the same units in every shard."""
    torch.manual_seed((seed * 1000 + epoch) * 1009 + rank)


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False,
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train; returns the last epoch's metrics. `on_step(step, steps, stats)` reports progress inside an epoch."""
    config = config.with_absolute_paths()
    check_config(config)
    device = pick_device(config.device)
    ddp = setup_distributed(device)
    if device.type == "cuda" and ddp.world > 1:
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    # every refusal before _start_run, which may remove an old run's checkpoints (--overwrite)
    if config.compile and config.compile_mode == "reduce-overhead" and ddp.world > 1:
        raise ValueError("--compile-mode reduce-overhead (CUDA graphs) is for one process: DDP's gradient "
                         "exchange runs between the graphs; use --compile-mode default under torchrun")
    if config.sync_bn and ddp.world > 1 and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices (SyncBatchNorm exchanges statistics over NCCL)")
    out = Path(config.out)
    last_path = out / "last.pt"
    ddp.agree(lambda: _start_run(out, resume, overwrite), on=ddp.main)
    checkpoint = ddp.from_main(lambda: _load_checkpoint(last_path) if resume else None)
    saved = TrainConfig.from_saved(checkpoint["config"]).with_absolute_paths() if checkpoint is not None else None
    if checkpoint is not None:
        refuse_old_clip_model(checkpoint, last_path)
    if saved is not None:
        changed = [k for k in saved.to_dict() if k not in TrainConfig.RESUMABLE
                   and saved.to_dict()[k] != config.to_dict()[k]]
        if changed:
            raise RunExists(f"--resume with other options than the run was started with: {', '.join(changed)}")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest convolution once

    stores = ddp.in_rank_order(lambda: _prepare_stores(config, checkpoint, saved))
    # node-local caches are built per node: a node that sees other data would train on it silently
    ddp.same_everywhere((stores.identity, stores.classes, len(stores.train)), "the training data")
    family = model_family(config.model)
    channels_last = family != "video" and (config.channels_last == "on" or
                                           (config.channels_last == "auto" and device.type == "cuda"))
    train_batches = _batches(config, stores.train, True, device, ddp, channels_last)
    # validation runs on rank 0 only
    val_batches = _batches(config, stores.val, False, device, ddp, channels_last) if stores.val and ddp.main else None
    model_kwargs = dict(config.model_kwargs)
    if saved is not None and saved.recipe == LEGACY_RECIPE:  # built as before the Keras numerics
        model_kwargs.update(LEGACY_KWARGS.get(config.model, {}))
    if family == "face-image":
        model_kwargs["in_channels"] = 1 if config.grayscale else 3

    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(stores.classes), **model_kwargs).to(device)
    if config.sync_bn and ddp.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], config, device)
    scheduler = create_scheduler(optimizer, config)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None) if ddp.world > 1 else model
    step = TrainStep(net, model, optimizer, config, device, train_batches.make)
    history, start_epoch, best = [], 0, {"val_acc": -1.0, "epoch": -1}
    if checkpoint is not None:
        load_model_state(model, checkpoint["model"], last_path)
        # the saved state carries its device's kernel choice (fused on CUDA, not on the CPU): keep this one's
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group, chosen in zip(optimizer.param_groups, kernels):
            group.update(chosen)
        scheduler.load_state_dict(checkpoint["scheduler"])
        if "scaler" in checkpoint:
            step.scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, best, history = checkpoint["epoch"] + 1, checkpoint["best"], checkpoint["history"]
    meta = {"model_name": config.model, "classes": stores.classes, "prep": asdict(config.prep),
            "data_identity": stores.identity, "normalize": config.normalize, "model_kwargs": model_kwargs,
            "config": config.to_dict(), **({"clip_pooling": CLIP_POOLING} if family == "video" else {})}
    if ddp.main:
        write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), out / "config.yaml")

    metrics = history[-1] if history else {}
    for epoch in range(start_epoch, config.epochs):
        _seed_epoch(config.seed, epoch, ddp.rank)
        net.train()
        t0 = time.perf_counter()
        done = run_epoch(step, train_batches, epoch, config.log_every, on_step if ddp.main else None, ddp.world)
        totals = torch.cat([done["sums"], torch.tensor([float(done["samples"])], device=device)])
        if ddp.world > 1:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - t0
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_loss, val_acc, val_extra = (evaluate_batches(model, val_batches, step.autocast_dtype)
                                        if val_batches else (math.nan, math.nan, {}))
        totals = totals.tolist()
        n = totals[-1]
        metrics = {"epoch": epoch, "lr": lr, "train_loss": totals[0] / n, "train_acc": totals[1] / n,
                   "val_loss": val_loss, "val_acc": val_acc, "samples_per_s": n / seconds, "seconds": seconds}
        metrics.update({f"train_{k}": v / n for k, v in zip(done["terms"], totals[2:-1])})
        metrics.update({f"val_{k}": v for k, v in val_extra.items()})
        history.append(metrics)
        if ddp.main:
            improved = val_batches is None or val_acc > best["val_acc"]
            if improved:
                best = {"val_acc": val_acc, "epoch": epoch}
                save_atomic({**meta, "model": model.state_dict(), "epoch": epoch, "best": best}, out / "best.pt")
            save_atomic({**meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": step.scaler.state_dict(), "epoch": epoch,
                         "best": best, "history": history}, last_path)
            _write_metrics(history, out / "metrics.csv")
            if on_epoch:
                on_epoch(metrics)
        if ddp.world > 1:  # rank 0 may validate and save for long: the coordination group's long timeout
            dist.barrier(group=ddp.group)
    if ddp.world > 1:
        dist.destroy_process_group()
    return {**metrics, "best_val_acc": best["val_acc"], "best_epoch": best["epoch"]}
