"""A model's `reference` recipe against its `fast` one on the same data: accuracy, optimiser steps, wall time.

The data is the GLA test's (tests/learnability.make_keyed_dataset: only the face says which band of the
context carries the label), at the test's small image sizes so that a CPU gets through it; `--per-class`
sets its size. Both recipes train for the same number of epochs, so the fast one takes batch/4 times fewer
steps; `--fast-epochs` gives it more. On a CPU `amp auto` is fp32, so the difference measured there is the
batch size and learning rate alone (bf16 is the GPU's).

    python benchmarks/compare_recipes.py --epochs 30 --seeds 0-2
    python benchmarks/compare_recipes.py --model caer-net-s --epochs 30 --fast-epochs 120

One JSON line per run on stdout, then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from glamor_model.engine.config import TrainConfig  # noqa: E402
from glamor_model.engine.loop import train  # noqa: E402
from glamor_model.engine.recipes import recipe_values  # noqa: E402
from glamor_model.eval.evaluate import evaluate_run  # noqa: E402
from learnability import make_keyed_dataset  # noqa: E402

SIZES = dict(face_size=24, context_height=64, context_width=86, crop=56)  # the GLA test's


def seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def run(args, data: Path, work: Path, recipe: str, seed: int) -> dict:
    epochs = args.fast_epochs if recipe == "fast" and args.fast_epochs else args.epochs
    out = work / f"{recipe}-{seed}"
    # the milestones scale with the shortened run (GLAMOR-Net's 25 and 40 sit in its 60 epochs)
    values = recipe_values(args.model, recipe)
    milestones = tuple(round(m * epochs / values["epochs"]) for m in values["milestones"])
    config = TrainConfig(data=str(data), out=str(out), model=args.model, recipe=recipe, epochs=epochs, seed=seed,
                         milestones=milestones, cache_dir=str(work / "cache"), **SIZES)
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    steps = -(-3 * args.per_class // config.batch_size) * epochs
    acc = {ck: round(evaluate_run(str(out), checkpoint=ck, cache_dir=str(work / "cache"))["accuracy"], 3)
           for ck in ("best", "last")}
    return {"model": args.model, "recipe": recipe, "seed": seed, "epochs": epochs, "batch": config.batch_size,
            "lr": config.lr, "steps": steps, "wall_s": round(wall, 1), "threads": args.threads, **acc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="glamor")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--fast-epochs", type=int, default=0, help="epochs of the fast recipe [--epochs]")
    p.add_argument("--per-class", type=int, default=200, help="training frames per class (3 classes)")
    p.add_argument("--seeds", default="0-1", help="initialisations: 0-2 or 0,2")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--work", type=Path, default=None, help="keep the runs here [a temporary folder]")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = make_keyed_dataset(work / "keyed", {"train": args.per_class, "val": max(args.per_class // 4, 5),
                                                   "test": 60}, seed=args.data_seed)
        rows = []
        for seed in seeds(args.seeds):
            for recipe in ("reference", "fast"):
                rows.append(run(args, data, work, recipe, seed))
                print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).groupby("recipe")[["steps", "wall_s", "best", "last"]].agg(["mean", "min", "max"])
    print(table.to_string())


if __name__ == "__main__":
    main()
