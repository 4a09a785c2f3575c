"""Embedding check: cosine neighbours across splits, for near-duplicates hashes miss.

The embedder is a callable from image paths to an (N, D) array, with a
`description` the report shows. The default is no network: a 16x16 colour thumbnail,
mean-removed and normalised, which catches colour and exposure changes but is no
semantic feature. `ncaer check-leakage --weights` passes a ResNet-18 embedder from
`glamor_model.serve.embed` (this package never imports `glamor_model`).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import pandas as pd

from .pairs import PAIR_COLUMNS, pair_table, split_pairs

THUMB = 16


class Embedder(Protocol):
    description: str

    def __call__(self, paths: list[str]) -> np.ndarray:
        """One row per image; unreadable images give any row (they are left out of the search)."""


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows mean-removed and scaled to unit length, so a dot product is a cosine similarity."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


class ThumbnailEmbedder:
    description = "16x16 colour thumbnail (no CNN weights given)"

    def __call__(self, paths: list[str]) -> np.ndarray:
        out = np.zeros((len(paths), THUMB * THUMB * 3), np.float32)
        for i, p in enumerate(paths):
            img = cv2.imread(p, cv2.IMREAD_REDUCED_COLOR_4)
            if img is not None:
                out[i] = cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
        return normalise_rows(out)


def embedding_pairs(images: pd.DataFrame, readable: np.ndarray, threshold: float,
                    embedder: Embedder) -> pd.DataFrame:
    """Pairs of readable images of two splits whose embeddings have cosine similarity >= `threshold`."""
    emb = embedder(images["path"].tolist())
    rows = []
    for a, b in split_pairs(images["split"].unique()):
        ia = np.flatnonzero((images["split"] == a).to_numpy() & readable)
        ib = np.flatnonzero((images["split"] == b).to_numpy() & readable)
        earlier = np.ascontiguousarray(emb[ia].T)  # gathered once, not per block
        for start in range(0, len(ib), 2048):
            block = ib[start : start + 2048]
            sim = emb[block] @ earlier
            qb, qa = np.nonzero(sim >= threshold)
            rows.append(pair_table(images, ia[qa], block[qb], 1.0 - sim[qb, qa].astype(float), "embedding"))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PAIR_COLUMNS)
