"""Evaluation of a trained run: accuracy, per-class accuracy, macro-F1, confusion matrix, attention maps;
frame models here, face-image models in `images`, clip models in `clips`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from glamor_model.data.batches import Batches
from glamor_model.data.datasets import read_dataset
from glamor_model.data.preprocess import Preprocess
from glamor_model.data.stores import cache_store, default_cache_dir
from glamor_model.engine.checkpoint import load_run
from glamor_model.engine.device import pick_device
from glamor_model.models import model_family
from glamor_model.pooling import POOLINGS, PROBABILITY_BETA, pool
from ncaer.atomic import write_csv, write_text

from .clips import evaluate_clips
from .images import evaluate_images
from .metrics import classification_metrics
from .plots import attention_overlay, plot_confusion


def video_level(probs: np.ndarray, samples: pd.DataFrame, classes: list[str], beta: float, out: Path) -> dict:
    """Clip-level metrics: frame probabilities grouped by video_id and pooled over time per pooling."""
    if samples["video_id"].isna().any() or (samples["video_id"] == "").any():
        raise ValueError("--video-level needs the source video of every sample: use an `ncaer build` output")
    groups = samples.groupby("video_id", sort=True).indices
    labels = np.array([samples["label_id"].iat[idx[0]] for idx in groups.values()])
    table = pd.DataFrame({"video_id": list(groups), "label": [classes[i] for i in labels],
                          "frames": [len(idx) for idx in groups.values()]})
    results = {"beta": beta, "clips": len(groups)}
    for how in POOLINGS:
        pred = np.array([pool(probs[idx], how, beta).argmax() for idx in groups.values()])
        results[how] = classification_metrics(labels, pred, len(classes))
        table[f"predicted_{how}"] = [classes[i] for i in pred]
        plot_confusion(np.array(results[how]["confusion_matrix"]), classes, out / f"confusion_matrix_clip_{how}.png",
                       f"clips, {how} pooling: accuracy {results[how]['accuracy']:.1%}")
    write_csv(table, out / "clip_predictions.csv")
    return results


def evaluate_run(run: str | Path, data: str | None = None, split: str = "test", checkpoint: str = "best",
                 out: str | Path | None = None, attention_maps: int = 0, boxes: str | None = None,
                 device: str = "auto", cache_dir: str = "", workers: int = 2, video: bool = False,
                 beta: float | None = None) -> dict:
    """Evaluate a run on a split; writes results.json, predictions.csv, confusion_matrix.{csv,png}.

    Without `data` the run's training data is used, and without `cache_dir` the run's cache folder.
    `video`: also pool the frame probabilities of each source video (mean, max, temporal
    softmax pooling with `beta`, default 5) and report clip-level figures. A clip model's evaluation
    compares its own pooling with the others over its frame logits (`beta` defaults to its own).
    """
    dev = pick_device(device)
    model, ckpt = load_run(run, checkpoint, dev)
    config = ckpt["config"]
    data = data or config["data"]
    out = Path(out) if out else Path(run) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or _usable_cache(config.get("cache_dir")) or default_cache_dir()
    header = {"run": str(run), "checkpoint": checkpoint, "epoch": ckpt["epoch"], "model": ckpt["model_name"],
              "data": str(data), "split": split, "classes": ckpt["classes"]}
    family = model_family(ckpt["model_name"])
    if family in ("face-image", "video"):
        if family == "face-image":
            found = evaluate_images(model, ckpt, data, split, out, dev, cache_dir, workers, boxes)
        else:
            found = evaluate_clips(model, ckpt, data, split, out, dev, cache_dir, workers, beta)
        results = {**header, **found}
        write_text(json.dumps(results, indent=2) + "\n", out / "results.json")
        return {**results, "out": str(out)}
    dataset = read_dataset(data, boxes or config.get("boxes"))
    if dataset.classes != ckpt["classes"]:
        raise ValueError(f"{data} has classes {dataset.classes}, the model was trained on {ckpt['classes']}")
    samples = dataset.split(split)
    if samples.empty:
        raise ValueError(f"{data} has no {split!r} samples")
    prep = Preprocess.from_saved(ckpt["prep"])
    store = cache_store(samples, prep, cache_dir, workers)
    batches = Batches(store, prep, 64, False, device=dev, normalize=ckpt["normalize"])
    probs, attention, fusion = [], [], []
    with torch.inference_mode():
        for faces, contexts, _, _ in batches.epoch(0):
            res = model.forward_all(faces, contexts)
            probs.append(torch.softmax(res["logits"].float(), 1).cpu())
            if "attention" in res:
                attention.append(res["attention"].float().cpu())
            if "fusion_weights" in res:
                fusion.append(res["fusion_weights"].float().cpu())
    probs = torch.cat(probs).numpy()
    y_true, y_pred = samples["label_id"].to_numpy(), probs.argmax(1)
    classes = ckpt["classes"]
    metrics = classification_metrics(y_true, y_pred, len(classes))
    results = {**header, "samples": int(len(samples)), **metrics}
    if fusion:
        w = torch.cat(fusion).numpy()
        results["mean_fusion_weights"] = {"face": float(w[:, 0].mean()), "context": float(w[:, 1].mean())}
    if video:
        results["video_level"] = video_level(probs, samples, classes, PROBABILITY_BETA if beta is None else beta, out)
    write_text(json.dumps(results, indent=2) + "\n", out / "results.json")
    predictions = pd.DataFrame({"sample_id": samples["sample_id"], "label": samples["label"],
                                "predicted": [classes[i] for i in y_pred], "correct": y_true == y_pred})
    for i, c in enumerate(classes):
        predictions[f"p_{c}"] = probs[:, i].round(5)
    write_csv(predictions, out / "predictions.csv")
    cm = np.array(metrics["confusion_matrix"])
    write_csv(pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes).reset_index(),
              out / "confusion_matrix.csv")
    plot_confusion(cm, classes, out / "confusion_matrix.png",
                   f"{ckpt['model_name']} on {split}: accuracy {metrics['accuracy']:.1%}, macro-F1 "
                   f"{metrics['macro_f1']:.3f}")
    if attention_maps and attention:
        _write_attention_maps(store, samples, torch.cat(attention).numpy(), y_pred, classes, prep, out / "attention",
                              attention_maps)
    results["out"] = str(out)
    return results


def _usable_cache(folder: str | None) -> str | None:
    """The run's cache folder if it can be used here: an existing writable folder, or one that can be made
    again (a cleaned scratch folder). A run copied from another machine or user may name one that is
    neither, and then the default folder serves."""
    if not folder:
        return None
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return folder if existing.is_dir() and os.access(existing, os.W_OK) else None


def _write_attention_maps(store, samples, attention, y_pred, classes, prep, folder: Path, n: int) -> None:
    """Per sample: the evaluation context crop, and the attention over it (as the paper's Figure 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    side = int(round(np.sqrt(attention.shape[1])))
    cy, cx = prep.centre
    picks = np.linspace(0, len(samples) - 1, min(n, len(samples))).round().astype(int)
    tiles = []
    for k, i in enumerate(dict.fromkeys(picks)):
        context = np.asarray(store.contexts[i])[cy : cy + prep.crop, cx : cx + prep.crop]
        big = cv2.resize(context, (224, 224), interpolation=cv2.INTER_LINEAR)
        overlay = attention_overlay(cv2.cvtColor(big, cv2.COLOR_RGB2BGR), attention[i].reshape(side, -1))
        tile = np.hstack([cv2.cvtColor(big, cv2.COLOR_RGB2BGR), overlay])
        caption = np.full((24, tile.shape[1], 3), 255, np.uint8)
        cv2.putText(caption, f"true {samples['label'].iat[i]} / predicted {classes[y_pred[i]]}", (4, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tile = np.vstack([tile, caption])
        name = str(samples["sample_id"].iat[i]).replace("/", "_")
        cv2.imwrite(str(folder / f"{k:03d}_{name}.png"), tile)
        tiles.append(tile)
    cv2.imwrite(str(folder.parent / "attention_maps.png"), np.vstack(tiles[:12]))
