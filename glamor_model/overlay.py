"""Attention heat maps over images (no torch needed)."""

from __future__ import annotations

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
