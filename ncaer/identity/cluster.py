"""Actors across clips: one embedding per clip's subject, grouped into identities.

A clip's subject is the face the build chose in each sampled frame; its embedding is
the mean of those faces' embeddings (a clip with no face has none). Two subjects are
the same person when their distance is below the threshold, and identities are the
connected components of that relation, so a person seen from several angles links
up through the clips in between.
"""

from __future__ import annotations

import numpy as np


def subject_embeddings(per_sample: np.ndarray, clip_of_sample: list[str]) -> tuple[list[str], np.ndarray]:
    """Mean embedding per clip, in order of first appearance."""
    clips: dict[str, list[int]] = {}
    for i, clip in enumerate(clip_of_sample):
        clips.setdefault(clip, []).append(i)
    names = list(clips)
    return names, np.stack([per_sample[rows].mean(axis=0) for rows in clips.values()]) if names else \
        np.zeros((0, per_sample.shape[1] if per_sample.ndim == 2 else 0), np.float32)


def identities(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Identity number of each row: connected components of 'distance < threshold', numbered by first row."""
    n = len(embeddings)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x = embeddings.astype(np.float64)
    squares = (x ** 2).sum(1)
    for start in range(0, n, 1024):  # distance blocks keep memory at 1024 x n
        block = x[start:start + 1024]
        d2 = squares[start:start + 1024, None] + squares[None, :] - 2 * block @ x.T
        for i, j in zip(*np.nonzero(d2 < threshold ** 2)):
            a, b = root(start + i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([root(i) for i in range(n)])
    _, numbered = np.unique(roots, return_inverse=True)
    return numbered


def pair_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering against the true identities."""
    same_pred = predicted[:, None] == predicted[None, :]
    same_true = truth[:, None] == truth[None, :]
    off = ~np.eye(len(truth), dtype=bool)
    tp = (same_pred & same_true & off).sum()
    precision = tp / max((same_pred & off).sum(), 1)
    recall = tp / max((same_true & off).sum(), 1)
    return float(precision), float(recall)
