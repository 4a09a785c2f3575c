"""`ncaer check-leakage --fix`: a cleaned split without the leaking images; sources untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ncaer.atomic import write_csv, write_text
from ncaer.dataset.manifest import FILE_COLUMNS, write_manifest

from .check import LeakReport


def write_fix(report: LeakReport, out: str | Path) -> pd.DataFrame:
    """A cleaned split without the leaking val/test images; source files are never touched.

    Manifest datasets get OUT/manifest.parquet (+ .csv) with paths relative to OUT;
    folder datasets get OUT/{split}.txt lists of absolute image paths. Both get
    OUT/removed.csv. Returns the removed images.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    imageset = report.imageset
    leaking = report.leaking_images()
    reasons = report.pairs.groupby("image_b")["check"].agg(lambda c: ",".join(sorted(set(c))))
    removed = imageset.images[imageset.images["image"].isin(leaking)][["image", "split", "label"]].copy()
    removed["checks"] = removed["image"].map(reasons)
    write_csv(removed.reset_index(drop=True), out / "removed.csv")
    if imageset.kind == "manifest":
        m = pd.read_parquet(imageset.root / "manifest.parquet")
        m = m[~m["image_path"].isin(leaking)].reset_index(drop=True)
        for column in FILE_COLUMNS:
            if column in m:
                m[column] = [os.path.relpath(imageset.root / p, out) if p else "" for p in m[column]]
        write_manifest(m, out)
    else:
        kept = imageset.images[~imageset.images["image"].isin(leaking)]
        for split, group in kept.groupby("split"):
            write_text("".join(f"{os.path.abspath(p)}\n" for p in group["path"]), out / f"{split}.txt")
    return removed
