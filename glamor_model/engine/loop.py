"""Training: the reference recipe (SGD momentum 0.9, lr 5e-4, x0.1 at epochs 25 and 40, floor
1e-5, 60 epochs, cross-entropy, best-on-validation checkpoint) with batch 32 by default.

Determinism: the model is initialised from `seed`; every epoch reseeds torch (dropout)
and the batch order/augmentation from (seed, epoch). A run interrupted and resumed
from its last checkpoint therefore ends with the same weights as an uninterrupted
one (on the CPU; GPU kernels may differ in the last bits).

Multi-GPU / multi-node: start with `torchrun`; each process takes a shard of every
epoch (DistributedDataParallel); `batch_size` is per process.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from glamor_model.data.batches import Batches, ClipBatches, ImageBatches
from glamor_model.data.datasets import read_dataset
from glamor_model.data.stores import cache_store, clip_store, default_cache_dir, image_store
from glamor_model.data.videos import ensure_build
from glamor_model.models import create_model, model_family
from glamor_model.models.feratt import reconstruction_figures
from ncaer.atomic import write_text

from .checkpoint import save_atomic
from .config import TrainConfig
from .device import amp_dtype, pick_device
from .distributed import setup_distributed
from .optim import create_optimizer, create_scheduler

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "samples_per_s", "seconds"]


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
    total_loss, correct, n, rec, inside, rebuilds = 0.0, 0, 0, 0.0, 0.0, False
    autocast = torch.autocast(batches.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.inference_mode(), autocast:
        for faces, contexts, labels, idx in batches.epoch(0):
            out = model(faces, contexts)
            logits = (out["logits"] if isinstance(out, dict) else out).float()
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            n += len(labels)
            if isinstance(out, dict) and "attended" in out:
                batch_rec, batch_inside = reconstruction_figures(out, contexts, batches.store.boxes[idx])
                rec, inside, rebuilds = rec + batch_rec.sum().item(), inside + batch_inside.sum().item(), True
    extra = {"rec": rec / max(n, 1), "attention_in_face_box": inside / max(n, 1)} if rebuilds else {}
    return total_loss / max(n, 1), correct / max(n, 1), extra


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


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False,
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train; returns the last epoch's metrics. `on_step(step, steps, stats)` reports progress inside an epoch."""
    config = config.with_absolute_paths()
    device = pick_device(config.device)
    ddp = setup_distributed(device)
    if device.type == "cuda" and ddp.world > 1:
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    out = Path(config.out)
    last_path = out / "last.pt"
    if ddp.main:
        if out.exists() and (out / "config.yaml").exists() and not resume and not overwrite:
            raise RunExists(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        out.mkdir(parents=True, exist_ok=True)
    checkpoint = torch.load(last_path, map_location="cpu", weights_only=False) if resume and last_path.exists() \
        else None
    saved = TrainConfig.from_dict(checkpoint["config"]).with_absolute_paths() if checkpoint is not None else None
    if saved is not None:
        changed = [k for k in saved.to_dict() if k not in TrainConfig.RESUMABLE
                   and saved.to_dict()[k] != config.to_dict()[k]]
        if changed:
            raise RunExists(f"--resume with other options than the run was started with: {', '.join(changed)}")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    cache_dir = config.cache_dir or default_cache_dir()
    prep = config.prep
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    common = dict(device=device, seed=config.seed, normalize=config.normalize, channels_last=channels_last)
    family = model_family(config.model)
    model_kwargs = dict(config.model_kwargs)
    if family == "video":
        build = ensure_build(config.data, config.frames, cache_dir, config.workers)
        classes = read_dataset(build).classes
        rows = pd.read_parquet(build / "manifest.parquet", columns=["split", "video_id", "label_id"])
        clips = rows[rows["split"] == "train"].groupby("video_id", sort=True)["label_id"].first()
        data_identity = _identity(clips.index, clips.to_numpy())
        _refuse_other_data(checkpoint, saved, config, data_identity)
        train_store = clip_store(build, "train", config.frames, prep, cache_dir)
        has_val = (rows["split"] == config.val_split).any()
        val_store = clip_store(build, config.val_split, config.frames, prep, cache_dir) if has_val else None
        train_batches = ClipBatches(train_store, config.batch_size, True, rank=ddp.rank, world=ddp.world, **common)
        val_batches = ClipBatches(val_store, config.batch_size, False, **common) if val_store else None
        channels_last = False  # 5-D clips
    elif family == "face-image":
        dataset = read_dataset(config.data, config.boxes)
        classes = dataset.classes
        train_samples = dataset.split("train")
        data_identity = _sample_identity(train_samples)
        _refuse_other_data(checkpoint, saved, config, data_identity)
        train_store = image_store(train_samples, config.image_size, config.grayscale, cache_dir, config.workers)
        val_samples = dataset.split(config.val_split)
        val_store = (image_store(val_samples, config.image_size, config.grayscale, cache_dir, config.workers)
                     if len(val_samples) else None)
        train_batches = ImageBatches(train_store, config.batch_size, True, rank=ddp.rank, world=ddp.world,
                                     **common)
        val_batches = ImageBatches(val_store, config.batch_size * 2, False, **common) if val_store else None
        model_kwargs["in_channels"] = 1 if config.grayscale else 3
    else:
        dataset = read_dataset(config.data, config.boxes)
        classes = dataset.classes
        train_samples = dataset.split("train")
        val_samples = dataset.split(config.val_split)
        if train_samples.empty:
            raise ValueError(f"{config.data} has no training samples")
        data_identity = _sample_identity(train_samples)
        _refuse_other_data(checkpoint, saved, config, data_identity)
        train_store = cache_store(train_samples, prep, cache_dir, config.workers)
        val_store = cache_store(val_samples, prep, cache_dir, config.workers) if len(val_samples) else None
        on_device = config.data_on_device == "on" or (
            config.data_on_device == "auto" and device.type == "cuda"
            and (train_store.faces.nbytes + train_store.contexts.nbytes) < 0.3 * torch.cuda.mem_get_info(device)[0])
        train_batches = Batches(train_store, prep, config.batch_size, True, rank=ddp.rank, world=ddp.world,
                                on_device=on_device, **common)
        val_batches = Batches(val_store, prep, config.batch_size * 2, False, **common) if val_store else None

    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(classes), **model_kwargs).to(device)
    if config.sync_bn and ddp.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], config)
    scheduler = create_scheduler(optimizer, config)
    history, start_epoch, best = [], 0, {"val_acc": -1.0, "epoch": -1}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, best, history = checkpoint["epoch"] + 1, checkpoint["best"], checkpoint["history"]
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None) if ddp.world > 1 else model
    step_fn = torch.compile(net) if config.compile else net
    autocast_dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(enabled=autocast_dtype == torch.float16)
    meta = {"model_name": config.model, "classes": classes, "prep": asdict(prep), "data_identity": data_identity,
            "normalize": config.normalize, "model_kwargs": model_kwargs, "config": config.to_dict()}
    if ddp.main:
        write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), out / "config.yaml")

    metrics = history[-1] if history else {}
    for epoch in range(start_epoch, config.epochs):
        torch.manual_seed(config.seed * 1000 + epoch)  # dropout draws: independent of resume
        net.train()
        t0 = time.perf_counter()
        totals = torch.zeros(3, device=device)  # loss sum, correct, samples
        term_sums: dict[str, torch.Tensor] = {}
        for step, (faces, contexts, labels, _) in enumerate(train_batches.epoch(epoch)):
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                result = step_fn(faces, contexts)
                if isinstance(result, dict):  # models with several loss terms (FERAtt) compute them
                    terms = model.loss_terms(result, contexts, labels)
                    loss, logits = terms.pop("loss"), result["logits"]
                    for k, v in terms.items():
                        term_sums[k] = term_sums.get(k, 0) + v.detach().float() * len(labels)
                else:
                    logits = result
                    loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            totals += torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum(),
                                   torch.tensor(len(labels), device=device)])
            if on_step and ddp.main:
                done = totals[2].item()
                on_step(step + 1, len(train_batches), {"epoch": epoch, "loss": totals[0].item() / done,
                                                       "acc": totals[1].item() / done,
                                                       "samples_per_s": done * ddp.world / (time.perf_counter() - t0)})
        names = sorted(term_sums)
        term_totals = torch.stack([term_sums[k] for k in names]) if names else None
        if ddp.world > 1:
            dist.all_reduce(totals)
            if term_totals is not None:
                dist.all_reduce(term_totals)
        seconds = time.perf_counter() - t0
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_loss, val_acc, val_extra = (evaluate_batches(model, val_batches, autocast_dtype) if val_batches and ddp.main
                                        else (math.nan, math.nan, {}))
        metrics = {"epoch": epoch, "lr": lr, "train_loss": totals[0].item() / totals[2].item(),
                   "train_acc": totals[1].item() / totals[2].item(), "val_loss": val_loss, "val_acc": val_acc,
                   "samples_per_s": totals[2].item() / seconds, "seconds": seconds}
        for k, v in zip(names, term_totals.tolist() if term_totals is not None else []):
            metrics[f"train_{k}"] = v / totals[2].item()
        metrics.update({f"val_{k}": v for k, v in val_extra.items()})
        history.append(metrics)
        if ddp.main:
            improved = val_batches is None or val_acc > best["val_acc"]
            if improved:
                best = {"val_acc": val_acc, "epoch": epoch}
            state = {**meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best, "history": history}
            if improved:
                save_atomic({**meta, "model": model.state_dict(), "epoch": epoch, "best": best}, out / "best.pt")
            save_atomic(state, last_path)
            _write_metrics(history, out / "metrics.csv")
            if on_epoch:
                on_epoch(metrics)
        if ddp.world > 1:
            dist.barrier()
    if ddp.world > 1:
        dist.destroy_process_group()
    return {**metrics, "best_val_acc": best["val_acc"], "best_epoch": best["epoch"]}

