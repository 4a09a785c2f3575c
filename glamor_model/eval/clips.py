"""Evaluation of clip models: clip accuracy with the model's own pooling, and with its frame
logits pooled by mean, max and temporal softmax, for comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glamor_model.data.batches import ClipBatches
from glamor_model.data.datasets import read_dataset
from glamor_model.data.preprocess import Preprocess
from glamor_model.data.stores import clip_store
from glamor_model.data.videos import ensure_build
from glamor_model.pooling import POOLINGS, pool
from ncaer.atomic import write_csv

from .metrics import classification_metrics
from .plots import plot_confusion


def evaluate_clips(model, ckpt: dict, data: str, split: str, out: Path, device, cache_dir: str, workers: int,
                   beta: float | None = None) -> dict:
    """Clip accuracy of a video model with its own pooling, and of its frame logits pooled as the video
    models pool them: by mean, max and temporal softmax (inverse temperature `beta`, by default the
    model's own), for comparison."""
    config = ckpt["config"]
    prep = Preprocess.from_saved(ckpt["prep"])
    build = ensure_build(data, config["frames"], cache_dir, workers)
    found = read_dataset(build).classes  # as training reads them
    if found != ckpt["classes"]:
        raise ValueError(f"{data} has classes {found}, the model was trained on {ckpt['classes']}")
    store = clip_store(build, split, config["frames"], prep, cache_dir)
    batches = ClipBatches(store, 32, False, device=device, normalize=ckpt["normalize"])
    logits, frame_logits = [], []
    with torch.inference_mode():
        for clips, mask, _, _ in batches.epoch(0):
            res = model.forward_all(clips, mask)
            logits.append(res["logits"].cpu())
            frame_logits.append(res["frame_logits"].cpu())
    logits, frame_logits = torch.cat(logits).numpy(), torch.cat(frame_logits).numpy()
    beta = model.inv_temperature if beta is None else beta
    classes, labels = ckpt["classes"], store.labels
    results = {"samples": len(labels), "unit": "clip", **classification_metrics(labels, logits.argmax(1), len(classes))}
    comparison = {f"{ckpt['model_name']} (trained pooling)": results["accuracy"]}
    for how in POOLINGS:
        pred = np.array([pool(_real_frames(frame_logits[i], store.mask[i]), how, beta).argmax()
                         for i in range(len(labels))])
        name = f"{how} pooling of its frame logits" + (f" (inverse temperature {beta:g})" if how == "softmax" else "")
        comparison[name] = classification_metrics(labels, pred, len(classes))["accuracy"]
    results["pooling_comparison"] = comparison
    if model.pooling == "softmax":  # video-max has none
        results["inverse_temperature"] = model.inv_temperature
    table = pd.DataFrame({"video_id": store.video_ids, "label": [classes[i] for i in labels],
                          "predicted": [classes[i] for i in logits.argmax(1)]})
    write_csv(table, out / "predictions.csv")
    plot_confusion(np.array(results["confusion_matrix"]), classes, out / "confusion_matrix.png",
                   f"{ckpt['model_name']} on {split} clips: accuracy {results['accuracy']:.1%}")
    return results


def _real_frames(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frames the model pooled: those with the subject, or all of them when none has it."""
    return frames[mask] if mask.any() else frames
