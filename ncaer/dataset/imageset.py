"""The images of a static dataset, from an `ncaer build` manifest or from folders.

Three layouts are understood:

- an `ncaer build` output: `manifest.parquet` (splits, sources, face boxes);
- the NCAER-S release layout: `images/{split}/{Class}/*.jpg`, with face boxes in
  `crop/{split}/{Class}/*.txt` where present;
- any image folder `ROOT/{split}/{Class}/*.{jpg,png}` (CAER-S).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .layout import IMAGE_EXTENSIONS, SPLITS, canonical_split

LAYOUTS = """\
expected one of
    DATASET/manifest.parquet                      (an `ncaer build` output)
    DATASET/images/{train,val,test}/{Class}/*.jpg  (the NCAER-S release layout, boxes in crop/)
    DATASET/{train,val,test}/{Class}/*.jpg|png     (an image-folder dataset such as CAER-S)"""


class DatasetError(ValueError):
    """Not a dataset, or nothing to compare."""


@dataclass
class ImageSet:
    root: Path
    kind: str  # "manifest" | "ncaer-release" | "folders"
    images: pd.DataFrame  # image (relative to root), path (absolute), split, label, video_id, group, box
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def has_sources(self) -> bool:
        return self.kind == "manifest"

    @property
    def has_boxes(self) -> bool:
        return self.images["box"].notna().any()

    def splits(self) -> list[str]:
        present = set(self.images["split"])
        return [s for s in SPLITS if s in present]


def load_imageset(root: str | Path) -> ImageSet:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; {LAYOUTS}")
    if (root / "manifest.parquet").is_file():
        imageset = _from_manifest(root)
    elif (root / "images").is_dir() and _split_dirs(root / "images"):
        imageset = _from_folders(root, root / "images", "ncaer-release", boxes_root=root / "crop")
    elif _split_dirs(root):
        imageset = _from_folders(root, root, "folders")
    else:
        raise DatasetError(f"{root} is not a dataset: no manifest.parquet and no split folders; {LAYOUTS}")
    if imageset.images.empty:
        raise DatasetError(f"{root} holds no images; {LAYOUTS}")
    return imageset


def _split_dirs(base: Path) -> list[tuple[str, Path]]:
    return [(canonical_split(p.name), p) for p in sorted(base.iterdir()) if p.is_dir() and canonical_split(p.name)]


def _from_manifest(root: Path) -> ImageSet:
    m = pd.read_parquet(root / "manifest.parquet")
    boxes = [None if pd.isna(r.face_x1) else (int(r.face_x1), int(r.face_y1), int(r.face_x2), int(r.face_y2))
             for r in m.itertuples()] if "face_x1" in m else [None] * len(m)
    images = pd.DataFrame({
        "image": m["image_path"].astype(str),
        "path": [str(root / p) for p in m["image_path"]],
        "split": m["split"].astype(str),
        "label": m["label"].astype(str),
        "video_id": m["video_id"].astype(str),
        "group": m["group"].astype(str) if "group" in m else m["video_id"].astype(str),
        "box": boxes,
    })
    return ImageSet(root, "manifest", images)


def _read_box(path: Path):
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        x1, y1, x2, y2 = (int(float(v)) for v in text.replace(" ", ",").split(",")[:4])
    except ValueError:
        return None
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _from_folders(root: Path, base: Path, kind: str, boxes_root: Path | None = None) -> ImageSet:
    rows, ignored = [], []
    seen_splits: dict[str, str] = {}
    for split, split_dir in _split_dirs(base):
        if split in seen_splits:
            raise DatasetError(f"{root}: folders {seen_splits[split]!r} and {split_dir.name!r} are the same split")
        seen_splits[split] = split_dir.name
        for path in sorted(split_dir.rglob("*")):
            if path.is_dir():
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append((rel, "not an image file (extension)"))
                continue
            parts = path.relative_to(split_dir).parts
            label = parts[0] if len(parts) > 1 else ""
            box = None
            if boxes_root is not None:
                box = _read_box(boxes_root / path.relative_to(base).with_suffix(".txt"))
            rows.append((rel, str(path), split, label, box))
    for p in sorted(base.iterdir()):
        if not (p.is_dir() and canonical_split(p.name)):
            ignored.append((p.relative_to(root).as_posix(), "not a split folder"))
    images = pd.DataFrame(rows, columns=["image", "path", "split", "label", "box"])
    images["video_id"] = None
    images["group"] = None
    return ImageSet(root, kind, images[["image", "path", "split", "label", "video_id", "group", "box"]], ignored)
