"""Pooling per-frame class scores over time: mean, max, and temporal softmax pooling.

Temporal softmax pooling (Aminbeidokhti, Pedersoli, Cardinal, Granger 2019):
for each class c, frame weights w_tc = softmax over t of (beta * s_tc), and the clip
score S_c = sum_t w_tc * s_tc. beta -> 0 gives the mean of the scores, beta -> inf
their maximum; in between, confident frames count more.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

POOLINGS = ("mean", "max", "softmax")


def temporal_softmax_pool(scores, beta: float, mask=None):
    """Pool (..., T, C) scores over T. `mask` (..., T) marks real frames (padding excluded)."""
    if isinstance(scores, np.ndarray):
        return temporal_softmax_pool(torch.from_numpy(scores), beta,
                                     None if mask is None else torch.from_numpy(mask)).numpy()
    z = beta * scores
    if mask is not None:
        z = z.masked_fill(~mask[..., None].bool(), float("-inf"))
    w = torch.softmax(z, dim=-2)
    return (w * torch.nan_to_num(scores, nan=0.0)).sum(-2)


def pool(scores: np.ndarray, how: str, beta: float = 5.0) -> np.ndarray:
    """(T, C) -> (C) with mean, max or temporal softmax pooling."""
    if how == "mean":
        return scores.mean(0)
    if how == "max":
        return scores.max(0)
    if how == "softmax":
        return temporal_softmax_pool(scores.astype(np.float64), beta)
    raise ValueError(f"pooling must be one of {POOLINGS}, not {how!r}")


class TemporalSoftmaxPool(nn.Module):
    """Temporal softmax pooling with a learned beta (one per model)."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return temporal_softmax_pool(scores, self.beta, mask)
