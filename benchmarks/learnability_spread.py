"""The spread of each training test's measured value over initialisations and thread counts.

Another CPU or thread count sums in another order and so follows another trajectory, as another
seed does: a test's bar must sit far from every value this prints, not only from one run's.
Each setting is the test's own (tests/test_train.py, test_feratt.py, test_pooling.py).

    python benchmarks/learnability_spread.py frames --seeds 0-5 --threads 1
    python benchmarks/learnability_spread.py faces --model feratt --seeds 0-3
    python benchmarks/learnability_spread.py clutter --seeds 0-3
    python benchmarks/learnability_spread.py clips --data-seeds 0-2 --seeds 0-1 --models video-tsp,video-mean

One JSON line per run on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from glamor_model.engine.config import TrainConfig  # noqa: E402
from glamor_model.engine.loop import train  # noqa: E402
from glamor_model.eval.evaluate import evaluate_run  # noqa: E402
from glamor_model.models.resnet import ResNet34  # noqa: E402
from learnability import make_clip_dataset, make_dataset, make_face_build  # noqa: E402
from ncaer.synth.composite import SynthConfig, synthesize  # noqa: E402

SMALL = dict(face_size=48, context_height=64, context_width=86, crop=56)


def seeds(text: str) -> list[int]:
    """'0-5' or '0,2,4'."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def accuracy(out: Path, cache: Path, checkpoint: str) -> float:
    return round(evaluate_run(str(out), checkpoint=checkpoint, cache_dir=str(cache))["accuracy"], 3)


def frames(args, work: Path) -> None:
    """test_each_model_learns_what_its_inputs_carry."""
    data = {"context": make_dataset(work / "ctx", "context", {"train": 60, "val": 15, "test": 60}),
            "face": make_dataset(work / "face", "face", {"train": 60, "val": 15, "test": 60}, seed=1)}
    cases = [("context-none", "masked"), ("context-none", "visible"), ("face-only", "masked"), ("glamor", "masked")]
    for model, context_face in cases:
        for seed in seeds(args.seeds):
            acc = {}
            for name, root in data.items():
                out = work / f"{model}-{context_face}-{name}-{seed}"
                train(TrainConfig(data=str(root), out=str(out), model=model, context_face=context_face, epochs=12,
                                  lr=0.03, batch_size=16, milestones=(8,), seed=seed, cache_dir=str(work / "cache"),
                                  **SMALL))
                acc[name] = accuracy(out, work / "cache", "last")
            print(json.dumps({"test": "frames", "model": model, "context_face": context_face, "seed": seed,
                              "threads": args.threads, **acc}), flush=True)


def faces(args, work: Path) -> None:
    """test_baseline_learns_... (preactresnet18) and test_feratt_learns_... (feratt) on clean faces."""
    data = make_dataset(work / "faces", "face", {"train": 40, "val": 10, "test": 20}, seed=2)
    recipe = (dict(epochs=12, lr=1e-4, optimizer="adam") if args.model == "feratt" else
              dict(epochs=8, lr=0.01, optimizer="sgd"))
    for seed in seeds(args.seeds):
        out = work / f"run{seed}"
        train(TrainConfig(data=str(data), out=str(out), model=args.model, image_size=32, batch_size=16, milestones=(),
                          seed=seed, cache_dir=str(work / "cache"), **recipe))
        row = {"test": "faces", "model": args.model, "seed": seed, "threads": args.threads,
               "accuracy": accuracy(out, work / "cache", "best" if args.model == "feratt" else "last")}
        metrics = pd.read_csv(out / "metrics.csv")
        if "val_rec" in metrics:  # the test asserts it halves
            row["val_rec_last_over_first"] = round(metrics["val_rec"].iloc[-1] / metrics["val_rec"].iloc[0], 3)
        print(json.dumps(row), flush=True)


def clutter(args, work: Path) -> None:
    """test_feratt_reconstruction_loss_goes_down_on_faces_in_clutter."""
    faces_build = make_face_build(work / "fb", {"train": 20, "val": 5, "test": 8})
    synthesize(SynthConfig(faces=str(faces_build), out=str(work / "s"), size=48, face_min=0.4, face_max=0.6))
    torch.manual_seed(0)
    torch.save(ResNet34().state_dict(), work / "r34.pth")
    for seed in seeds(args.seeds):
        out = work / f"run{seed}"
        train(TrainConfig(data=str(work / "s"), out=str(out), model="feratt", epochs=4, image_size=48, batch_size=16,
                          lr=1e-4, optimizer="adam", milestones=(), seed=seed, cache_dir=str(work / "cache"),
                          model_kwargs={"attention_weights": str(work / "r34.pth")}))
        rec = pd.read_csv(out / "metrics.csv")["train_rec"]
        print(json.dumps({"test": "clutter", "seed": seed, "threads": args.threads,
                          "train_rec": [round(v, 4) for v in rec],
                          "last_over_first": round(rec.iloc[-1] / rec.iloc[0], 3)}), flush=True)


def clips(args, work: Path) -> None:
    """test_clip_models_learn_a_label_that_two_frames_of_eight_carry (--filler neutral: the comparison in
    docs/video.md, with --optimizer sgd --lr 0.03 --epochs 20 --milestones 14)."""
    for data_seed in seeds(args.data_seeds):
        data = make_clip_dataset(work / f"clips{data_seed}", {"train": 40, "val": 10, "test": 20}, frames=8,
                                 expressive=2, seed=data_seed, filler=args.filler)
        for seed in seeds(args.seeds):
            acc = {}
            for model in args.models.split(","):
                out = work / f"{model}-{data_seed}-{seed}"
                train(TrainConfig(data=str(data), out=str(out), model=model, epochs=args.epochs,
                                  optimizer=args.optimizer, lr=args.lr, batch_size=8, frames=8, face_size=32, seed=seed,
                                  milestones=tuple(seeds(args.milestones)) if args.milestones else (),
                                  cache_dir=str(work / "cache")))
                acc[model] = {ck: accuracy(out, work / "cache", ck) for ck in ("best", "last")}
            print(json.dumps({"test": "clips", "filler": args.filler, "data_seed": data_seed, "seed": seed,
                              "threads": args.threads, **acc}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setting", choices=["frames", "faces", "clutter", "clips"])
    p.add_argument("--seeds", default="0-2", help="initialisations (TrainConfig.seed): 0-5 or 0,2,4")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads")
    p.add_argument("--model", default="preactresnet18", choices=["preactresnet18", "feratt"], help="faces only")
    p.add_argument("--data-seeds", default="0", help="clips only")
    p.add_argument("--filler", default="noise", choices=["noise", "neutral"], help="clips only")
    p.add_argument("--optimizer", default="adam", help="clips only")
    p.add_argument("--lr", type=float, default=1e-3, help="clips only")
    p.add_argument("--epochs", type=int, default=8, help="clips only")
    p.add_argument("--milestones", default="", help="clips only, e.g. 14")
    p.add_argument("--models", default="video-tsp,video-mean", help="clips only, comma-separated")
    p.add_argument("--work", default=None, help="scratch folder [a new temporary one]")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="learnability-"))
    {"frames": frames, "faces": faces, "clutter": clutter, "clips": clips}[args.setting](args, work)


if __name__ == "__main__":
    main()
