"""Leak pairs: one row per (earlier-split image, later-split image) that a check links."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ncaer.dataset.layout import SPLITS

PAIR_COLUMNS = ["image_a", "split_a", "image_b", "split_b", "distance", "check"]


def split_pairs(splits) -> list[tuple[str, str]]:
    """(earlier, later) for every two of the given splits, in train -> val -> test order."""
    order = [s for s in SPLITS if s in splits]
    return [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]


def pair_table(images: pd.DataFrame, ia, ib, dist, check: str) -> pd.DataFrame:
    """Pairs of rows `ia` (earlier) and `ib` (later) of an image set, at distances `dist`."""
    return pd.DataFrame({
        "image_a": images["image"].to_numpy()[ia], "split_a": images["split"].to_numpy()[ia],
        "image_b": images["image"].to_numpy()[ib], "split_b": images["split"].to_numpy()[ib],
        "distance": np.asarray(dist, dtype=float), "check": check,
    })
