"""Benchmark training throughput: the data pipeline alone, and full training steps of a model.

Prints samples/s for (1) the input pipeline (gather from the cached uint8 arrays,
augment, move to the device) with no model, and (2) training steps of `--model`
(forward, backward, SGD) at `--batch-size`, on the CPU or a GPU (AMP bf16 and
channels-last on CUDA, as `ncaer train` uses them). Inputs are random images at the
reference sizes (96x96 faces, 128x171 contexts cropped to 112).

Usage: python benchmarks/bench_train.py [--model glamor] [--batch-size 32] [--device auto] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from glamor_model.data.batches import Batches
from glamor_model.data.preprocess import Preprocess
from glamor_model.engine.device import pick_device
from glamor_model.models import create_model

console = Console()


class RandomStore:
    """An ArrayStore stand-in: random uint8 arrays in memory."""

    def __init__(self, n: int, prep: Preprocess, classes: int = 7):
        rng = np.random.default_rng(0)
        self.faces = rng.integers(0, 256, (n, prep.face_size, prep.face_size, 3), dtype=np.uint8)
        self.contexts = rng.integers(0, 256, (n, prep.context_height, prep.context_width, 3), dtype=np.uint8)
        self.labels = rng.integers(0, classes, n).astype(np.int64)

    def __len__(self):
        return len(self.labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glamor")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--samples", type=int, default=4096, help="size of the random dataset")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    prep = Preprocess()
    store = RandomStore(args.samples, prep)
    figures = {"device": str(torch.cuda.get_device_name(device) if cuda else "cpu"), "model": args.model,
               "batch_size": args.batch_size, "torch": torch.__version__, "threads": torch.get_num_threads()}

    for on_device in ([False, True] if cuda else [False]):
        batches = Batches(store, prep, args.batch_size, train=True, device=device, on_device=on_device,
                          channels_last=cuda)
        n, t = 0, time.perf_counter()
        for epoch in range(100):
            for _faces, _contexts, labels, _ in batches.epoch(epoch):
                n += len(labels)
            if time.perf_counter() - t > 3:
                break
        if cuda:
            torch.cuda.synchronize()
        figures[f"pipeline_samples_per_s{'_on_device' if on_device else ''}"] = n / (time.perf_counter() - t)

    model = create_model(args.model).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=5e-4, momentum=0.9)
    batches = Batches(store, prep, args.batch_size, train=True, device=device, on_device=cuda, channels_last=cuda)
    amp = torch.bfloat16 if cuda else None

    def run(steps: int) -> int:
        n = 0
        it = batches.epoch(0)
        for _ in range(steps):
            try:
                faces, contexts, labels, _ = next(it)
            except StopIteration:
                it = batches.epoch(1)
                faces, contexts, labels, _ = next(it)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(step_model(faces, contexts).float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(labels)
        if cuda:
            torch.cuda.synchronize()
        return n

    run(3)  # warm-up (cuDNN autotuning, compilation)
    t = time.perf_counter()
    n = run(args.steps)
    figures["train_samples_per_s"] = n / (time.perf_counter() - t)

    table = Table(title=f"training throughput: {args.model}, batch {args.batch_size}, {figures['device']}")
    table.add_column("figure")
    table.add_column("samples/s", justify="right")
    table.add_row("input pipeline alone (memory-mapped arrays -> augmented tensors)",
                  f"{figures['pipeline_samples_per_s']:.0f}")
    if cuda:
        table.add_row("input pipeline alone, arrays kept on the GPU",
                      f"{figures['pipeline_samples_per_s_on_device']:.0f}")
    table.add_row(f"training steps ({'AMP bf16, channels-last' if cuda else 'fp32'})",
                  f"{figures['train_samples_per_s']:.0f}")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
