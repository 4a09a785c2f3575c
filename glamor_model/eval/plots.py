"""Pictures of results: the confusion matrix as a PNG, and attention heat maps over images (no torch)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def attention_overlay(bgr: np.ndarray, attention: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An (h, w) attention map, scaled to its own min..max (uniform attention shows as cold),
    upsampled to the image and blended over it."""
    lo, hi = float(attention.min()), float(attention.max())
    a = (attention - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(attention)
    h, w = bgr.shape[:2]
    heat = cv2.resize(a.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    heat = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(bgr, 1 - alpha, heat, alpha, 0)


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
