"""Evaluation of a trained run: accuracy, per-class accuracy, macro-F1, confusion matrix, attention maps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from ncaer.manifest import write_csv, write_text

from .data import Batches, Preprocess, cache_store, default_cache_dir, read_dataset
from .overlay import attention_overlay
from .pooling import POOLINGS, pool
from .registry import create_model, model_family
from .train import pick_device


def load_run(run: str | Path, checkpoint: str = "best", device="cpu"):
    """The model of a run directory and the checkpoint's metadata."""
    run = Path(run)
    path = run / f"{checkpoint}.pt" if checkpoint in ("best", "last") else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a directory written by `ncaer train`?")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    # pretrained-weight files were read at training time; their values are in the checkpoint
    kwargs = {k: v for k, v in ckpt.get("model_kwargs", {}).items() if not k.endswith("_weights")}
    model = create_model(ckpt["model_name"], num_classes=len(ckpt["classes"]), **kwargs)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "per_class_accuracy": recall.tolist(),
        "per_class_precision": precision.tolist(),
        "per_class_f1": f1.tolist(),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "support": support.tolist(),
        "confusion_matrix": cm.tolist(),
    }


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.0 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
                 beta: float = 5.0) -> dict:
    """Evaluate a run on a split; writes results.json, predictions.csv, confusion_matrix.{csv,png}.

    `video`: also pool the frame probabilities of each source video (mean, max, temporal
    softmax pooling with `beta`) and report clip-level figures.
    """
    dev = pick_device(device)
    model, ckpt = load_run(run, checkpoint, dev)
    config = ckpt["config"]
    data = data or config["data"]
    out = Path(out) if out else Path(run) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or default_cache_dir()
    header = {"run": str(run), "checkpoint": checkpoint, "epoch": ckpt["epoch"], "model": ckpt["model_name"],
              "data": str(data), "split": split, "classes": ckpt["classes"]}
    family = model_family(ckpt["model_name"])
    if family in ("face-image", "video"):
        if family == "face-image":
            found = evaluate_images(model, ckpt, data, split, out, dev, cache_dir, workers, boxes)
        else:
            from .video import evaluate_clips

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
    prep = Preprocess(**ckpt["prep"])
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
        results["video_level"] = video_level(probs, samples, classes, beta, out)
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


def evaluate_images(model, ckpt: dict, data: str, split: str, out: Path, device, cache_dir: str, workers: int,
                    boxes: str | None) -> dict:
    """FERAtt / PreActResNet-18: accuracy, macro precision, recall and F1 (and, for comparison with the
    FERAtt paper, F1 computed from macro precision and recall); for FERAtt the reconstruction error and
    the share of attention inside the face box."""
    from .data import ImageBatches, image_store, reconstruction_figures

    config = ckpt["config"]
    dataset = read_dataset(data, boxes or config.get("boxes"))
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
