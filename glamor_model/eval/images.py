"""Evaluation of face-image models (FERAtt, PreActResNet-18): accuracy, macro precision, recall and F1,
and for FERAtt how well it rebuilds the face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glamor_model.data.batches import ImageBatches
from glamor_model.data.datasets import read_dataset
from glamor_model.data.stores import image_store
from glamor_model.models.feratt import reconstruction_figures
from ncaer.atomic import write_csv

from .metrics import classification_metrics
from .plots import plot_confusion


def evaluate_images(model, ckpt: dict, data: str, split: str, out: Path, device, cache_dir: str, workers: int,
                    boxes: str | None) -> dict:
    """FERAtt / PreActResNet-18: accuracy, macro precision, recall and F1 (and, for comparison with the
    FERAtt paper, F1 computed from macro precision and recall); for FERAtt the reconstruction error and
    the share of attention inside the face box."""
    config = ckpt["config"]
    dataset = read_dataset(data, boxes or config.get("boxes"))
    if dataset.classes != ckpt["classes"]:
        raise ValueError(f"{data} has classes {dataset.classes}, the model was trained on {ckpt['classes']}")
    samples = dataset.split(split)
    if samples.empty:
        raise ValueError(f"{data} has no {split!r} samples")
    store = image_store(samples, config["image_size"], config["grayscale"], cache_dir, workers)
    preds, rec, inside = [], [], []
    with torch.inference_mode():
        for images, targets, _, idx in ImageBatches(store, 64, False, device=device).epoch(0):
            res = model(images, targets)
            preds.append(res["logits"].argmax(1).cpu())
            if "attended" in res:
                figures = reconstruction_figures(res, targets, store.boxes[idx])
                rec.append(figures[0].cpu())
                inside.append(figures[1].cpu())
    classes = ckpt["classes"]
    y_pred = torch.cat(preds).numpy()
    metrics = classification_metrics(store.labels, y_pred, len(classes))
    p, r = metrics["macro_precision"], metrics["macro_recall"]
    results = {"samples": len(samples), **metrics,
               "f1_from_macro_precision_recall": 2 * p * r / (p + r) if p + r else 0.0}
    if rec:
        results["reconstruction_mse"] = float(torch.cat(rec).mean())
        results["attention_in_face_box"] = float(torch.cat(inside).mean())
    write_csv(pd.DataFrame({"sample_id": samples["sample_id"], "label": samples["label"],
                            "predicted": [classes[i] for i in y_pred]}), out / "predictions.csv")
    plot_confusion(np.array(metrics["confusion_matrix"]), classes, out / "confusion_matrix.png",
                   f"{ckpt['model_name']} on {split}: accuracy {metrics['accuracy']:.1%}")
    return results
