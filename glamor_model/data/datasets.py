"""Static datasets for training and evaluation: the samples of any of the three layouts.

An `ncaer build` output (manifest.parquet), the NCAER-S release layout (images/ +
crop/*.txt), or an image-folder dataset (CAER-S) with a box file (CSV:
image,x1,y1,x2,y2, image paths relative to the dataset folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ncaer.dataset.imageset import load_imageset
from ncaer.dataset.layout import CAER_CLASSES


@dataclass
class Dataset:
    root: Path
    kind: str
    classes: list[str]
    samples: pd.DataFrame  # sample_id, path, split, label, label_id, video_id, box, target (synthetic data)

    def split(self, name: str) -> pd.DataFrame:
        return self.samples[self.samples["split"] == name].reset_index(drop=True)


def read_dataset(root: str | Path, boxes: str | Path | None = None) -> Dataset:
    """Samples of any of the three layouts; `boxes` adds face boxes to an image-folder dataset."""
    imageset = load_imageset(root)
    images = imageset.images.copy()
    if boxes is not None:
        table = pd.read_csv(boxes)
        missing = {"image", "x1", "y1", "x2", "y2"} - set(table.columns)
        if missing:
            raise ValueError(f"{boxes}: box file lacks column(s) {', '.join(sorted(missing))}")
        by_image = {r.image: (int(r.x1), int(r.y1), int(r.x2), int(r.y2)) for r in table.itertuples()
                    if r.x2 > r.x1 and r.y2 > r.y1}
        images["box"] = [by_image.get(i) for i in images["image"]]
    if imageset.kind == "manifest":
        m = pd.read_parquet(imageset.root / "manifest.parquet")
        images["label_id"] = m["label_id"].to_numpy()
        build = imageset.root / "build.json"
        classes = (json.loads(build.read_text())["corpus"]["classes"] if build.is_file() else
                   list(m.drop_duplicates("label_id").sort_values("label_id")["label"]))
        images["sample_id"] = m["sample_id"].astype(str).to_numpy()
        if "target_path" in m:  # `ncaer synth` output: the clean face on black
            images["target"] = [str(imageset.root / p) for p in m["target_path"]]
    else:
        labels = sorted(images["label"].unique(), key=str.lower)
        lookup = {c.lower(): c for c in CAER_CLASSES}
        if all(label.lower() in lookup for label in labels):
            classes = list(CAER_CLASSES)
            images["label"] = [lookup[label.lower()] for label in images["label"]]
        else:
            classes = labels
        images["label_id"] = [classes.index(label) for label in images["label"]]
        images["sample_id"] = images["image"]
        images["video_id"] = images["video_id"].fillna("")
    if "target" not in images:
        images["target"] = None
    samples = images[["sample_id", "path", "split", "label", "label_id", "video_id", "box", "target"]]
    return Dataset(imageset.root, imageset.kind, classes, samples.reset_index(drop=True))
