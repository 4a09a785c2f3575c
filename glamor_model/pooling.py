"""Pooling per-frame class scores over time: mean, max, and temporal softmax pooling.

Temporal softmax pooling (Aminbeidokhti, Pedersoli, Cardinal, Granger 2019):
for each class c, frame weights w_tc = softmax over t of (beta * s_tc), and the clip
score S_c = sum_t w_tc * s_tc. beta -> 0 gives the mean of the scores, beta -> inf
their maximum; in between, confident frames count more.

Works on numpy arrays and, through their own methods, on torch tensors, so this
module needs no torch (ONNX inference uses it).
"""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "max", "softmax")
# beta for frame *probabilities* in [0, 1] (evaluate --video-level, predict): near 1 it pools almost like the mean
PROBABILITY_BETA = 5.0


def temporal_softmax_pool(scores, beta, mask=None):
    """Pool (..., T, C) scores over T. `mask` (..., T) marks real frames (padding excluded)."""
    if isinstance(scores, np.ndarray):
        z = beta * scores
        if mask is not None:
            z = np.where(mask[..., None], z, -np.inf)
        z = z - z.max(axis=-2, keepdims=True)
        w = np.exp(z)
        w = w / w.sum(axis=-2, keepdims=True)
        return (w * np.where(np.isfinite(scores), scores, 0.0)).sum(axis=-2)
    z = beta * scores
    if mask is not None:
        z = z.masked_fill(~mask[..., None].bool(), float("-inf"))
    return (z.softmax(dim=-2) * scores.nan_to_num(0.0)).sum(-2)


def pool(scores: np.ndarray, how: str, beta: float = PROBABILITY_BETA) -> np.ndarray:
    """(T, C) -> (C) with mean, max or temporal softmax pooling."""
    if how == "mean":
        return scores.mean(0)
    if how == "max":
        return scores.max(0)
    if how == "softmax":
        return temporal_softmax_pool(scores.astype(np.float64), beta)
    raise ValueError(f"pooling must be one of {POOLINGS}, not {how!r}")
