"""Benchmark training throughput on the code path of `ncaer train`.

Builds a frame store of random images at the reference sizes (96x96 faces, 128x171
contexts cropped to 112) in a temporary folder, then trains with the engine's own
`TrainStep` and `run_epoch` (forward, loss, backward, optimizer; progress read every
--log-every steps, as the CLI does) on `Batches`, the engine's input pipeline: arrays
kept on the GPU, or read from the memory-mapped files by loader workers.

Prints samples/s of training, of the input pipeline alone (no model), and on CUDA the
share of the training time the GPU is busy (kernel time over wall time, from the
PyTorch profiler, over a separate profiled pass).

Usage: python benchmarks/bench_train.py [--model glamor] [--batch-size 32] [--device auto]
       [--amp auto|off|bf16|fp16] [--compile [--compile-mode reduce-overhead]] [--data-on-device on|off]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from glamor_model.data.batches import Batches
from glamor_model.data.preprocess import Preprocess
from glamor_model.data.stores import ArrayStore
from glamor_model.engine.config import TrainConfig
from glamor_model.engine.device import pick_device
from glamor_model.engine.loop import TrainStep, run_epoch
from glamor_model.engine.optim import create_optimizer
from glamor_model.models import create_model

console = Console()


def random_store(folder: Path, n: int, prep: Preprocess, classes: int = 7) -> ArrayStore:
    """An array store of random uint8 images, in the files `cache_store` writes."""
    rng = np.random.default_rng(0)
    np.save(folder / "faces.npy", rng.integers(0, 256, (n, prep.face_size, prep.face_size, 3), dtype=np.uint8))
    np.save(folder / "contexts.npy",
            rng.integers(0, 256, (n, prep.context_height, prep.context_width, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", rng.integers(0, classes, n).astype(np.int64))
    return ArrayStore(folder)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def kernel_seconds(prof) -> float:
    """Time the GPU ran anything (kernels, copies), overlaps counted once."""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    busy, end = 0.0, -np.inf
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glamor")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    ap.add_argument("--data-on-device", default="auto", choices=["auto", "on", "off"],
                    help="auto: on for CUDA (as `ncaer train` when the arrays fit)")
    ap.add_argument("--loader-workers", type=int, default=None)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--steps", type=int, default=200, help="timed training steps (whole epochs, at least this many)")
    ap.add_argument("--samples", type=int, default=None, help="store size [enough for 50 steps, 512 to 16384]")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = True  # as the engine sets it
    prep = Preprocess()
    n = args.samples or int(np.clip(args.batch_size * 50, 512, 16384))
    config = TrainConfig(data="-", out="-", model=args.model, batch_size=args.batch_size, amp=args.amp,
                         compile=args.compile, compile_mode=args.compile_mode, log_every=args.log_every)
    on_device = args.data_on_device == "on" or (args.data_on_device == "auto" and cuda)
    figures = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "model": args.model,
               "batch_size": args.batch_size, "amp": args.amp, "compile": args.compile and args.compile_mode,
               "data_on_device": on_device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "samples": n}

    with tempfile.TemporaryDirectory() as tmp:
        store = random_store(Path(tmp), n, prep)
        batches = Batches(store, prep, args.batch_size, True, device=device, on_device=on_device,
                          channels_last=cuda, loader_workers=args.loader_workers)
        figures["loader_workers"] = 0 if on_device else batches.loader_workers
        steps_per_epoch = len(batches)
        epochs = max(1, -(-args.steps // steps_per_epoch))

        def pipeline():
            for epoch in range(epochs):
                for _ in batches.epoch(epoch):
                    pass

        figures["pipeline_samples_per_s"] = epochs * n / timed(pipeline, device)

        model = create_model(args.model).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        optimizer = create_optimizer(model.parameters(), config, device)
        step = TrainStep(model, model, optimizer, config, device, batches.make)
        model.train()
        stats = {}

        def on_step(k, steps, s):
            stats.update(s)

        def train(first: int, count: int):
            for epoch in range(first, first + count):
                run_epoch(step, batches, epoch, args.log_every, on_step)

        figures["warmup_s"] = timed(lambda: train(0, 1), device)  # cuDNN autotuning, compilation, graph capture
        seconds = timed(lambda: train(1, epochs), device)
        figures["train_samples_per_s"] = epochs * n / seconds
        figures["step_ms"] = 1000 * seconds / (epochs * steps_per_epoch)
        if cuda:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                train(1 + epochs, 1)
                sync(device)
            # GPU time of a step (the profiler slows the host, not the kernels) over the unprofiled step time
            figures["gpu_busy_share"] = kernel_seconds(prof) / steps_per_epoch / (seconds / (epochs * steps_per_epoch))

    table = Table(title=f"training throughput: {args.model}, batch {args.batch_size}, {figures['device']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    where = "arrays on the GPU" if on_device else f"memory-mapped files, {figures['loader_workers']} loader workers"
    table.add_row(f"input pipeline alone ({where}), samples/s", f"{figures['pipeline_samples_per_s']:.0f}")
    mode = f"AMP {config.amp}" + (f", compiled ({args.compile_mode})" if args.compile else "")
    table.add_row(f"training ({mode}), samples/s", f"{figures['train_samples_per_s']:.0f}")
    table.add_row("time per step, ms", f"{figures['step_ms']:.2f}")
    table.add_row("first epoch (warm-up), s", f"{figures['warmup_s']:.1f}")
    if cuda:
        table.add_row("GPU busy, share of training time", f"{figures['gpu_busy_share']:.0%}")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
