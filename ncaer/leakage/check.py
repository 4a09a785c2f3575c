"""Train/test leakage checks for static image datasets.

For every pair of splits (train -> val, train -> test, val -> test) each check
lists the images of the later split that have a twin in the earlier one:

- source: (manifest only) the same video_id or group in both splits;
- exact: identical decoded pixels (a hash of the pixels, not of the file bytes);
- near: perceptual near-duplicates: pHash within `threshold` bits, confirmed by
  dHash within `dhash_threshold` bits, searched with a multi-index hash table;
- embedding (optional): cosine similarity of image embeddings above a threshold; the
  embedder is passed in (a colour thumbnail by default; `ncaer check-leakage --weights`
  passes a ResNet-18 from `glamor_model`, which this package never imports).

`region="context"` hashes the image with the face box blacked out, so two
different people filmed in one scene are judged by the scene.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ncaer.dataset.imageset import DatasetError, ImageSet

from .embedding import Embedder, ThumbnailEmbedder, embedding_pairs
from .hamming_index import MAX_RADIUS, HammingIndex
from .hashing import HashJob, hash_images, pixel_hash, read_pixels
from .pairs import PAIR_COLUMNS, pair_table, split_pairs

CHECKS = ("source", "exact", "near", "embedding")
EXACT_RADIUS = 8  # identical pixels decoded through different paths (PNG vs JPEG) stay within this


@dataclass(frozen=True)
class LeakConfig:
    threshold: int = 10  # pHash bits
    dhash_threshold: int = 14  # dHash bits, confirming a pHash match
    region: str = "image"  # image | context
    embedding: bool = False
    embedding_threshold: float = 0.95
    workers: int = 1

    def __post_init__(self):
        if not 0 <= self.threshold <= MAX_RADIUS:
            raise ValueError(f"--threshold must be at most {MAX_RADIUS} bits (and not negative): two random 64-bit "
                             "hashes (32 +- 4 bits apart) are within 24 bits once in 33 pairs, so unrelated images "
                             "would match, and the hash index would compare every pair")
        if self.region not in ("image", "context"):
            raise ValueError("--region must be image or context")


@dataclass
class LeakReport:
    imageset: ImageSet
    config: LeakConfig
    pairs: pd.DataFrame
    summary: pd.DataFrame  # split_a, split_b, check, leaking, total, percent
    unreadable: pd.DataFrame  # image, split, reason
    embedding_used: str | None = None
    timings: dict = field(default_factory=dict)

    @property
    def leaked(self) -> bool:
        return bool(len(self.pairs))

    def leaking_images(self) -> set[str]:
        """Images of later splits that have a twin in an earlier split (what --fix removes)."""
        return set(self.pairs["image_b"])


def check_leakage(imageset: ImageSet, config: LeakConfig = LeakConfig(),
                  embedder: Embedder | None = None) -> LeakReport:
    """Every check on every pair of splits. With `config.embedding`, `embedder` (default: a colour
    thumbnail) embeds the images for the cosine check."""
    splits = imageset.splits()
    if len(splits) < 2:
        raise DatasetError(f"{imageset.root}: only one split ({', '.join(splits) or 'none'}) holds images; "
                           "leakage needs two to compare")
    if config.region == "context" and not imageset.has_boxes:
        raise DatasetError("--region context needs face boxes: an ncaer build manifest or crop/*.txt files")
    images = imageset.images
    timings = {}

    t = time.perf_counter()
    boxes = images["box"] if config.region == "context" else [None] * len(images)
    jobs = [HashJob(p, b) for p, b in zip(images["path"], boxes)]
    ph, dh, errors = hash_images(jobs, workers=config.workers)
    timings["hash_s"] = time.perf_counter() - t
    timings["images_per_s"] = len(jobs) / max(timings["hash_s"], 1e-9)
    readable = np.array([e == "" for e in errors])
    unreadable = pd.DataFrame({"image": images["image"][~readable], "split": images["split"][~readable],
                               "reason": [e for e in errors if e]}).reset_index(drop=True)

    frames = []
    t = time.perf_counter()
    pixel_cache: dict[int, str | None] = {}
    for a, b in split_pairs(splits):
        ia = np.flatnonzero((images["split"] == a).to_numpy() & readable)
        ib = np.flatnonzero((images["split"] == b).to_numpy() & readable)
        if imageset.has_sources:
            frames.append(_source_pairs(images, a, b))
        if not len(ia) or not len(ib):
            continue
        index = HammingIndex(ph[ia])
        qi, di, dist = index.search(ph[ib], max(config.threshold, EXACT_RADIUS))
        pa, pb = ia[di], ib[qi]
        near = (dist <= config.threshold) & (np.bitwise_count(dh[pa] ^ dh[pb]) <= config.dhash_threshold)
        frames.append(pair_table(images, pa[near], pb[near], dist[near], "near"))
        same = [i for i, (x, y) in enumerate(zip(pa, pb))
                if (h := _pixels(images, x, pixel_cache)) is not None and h == _pixels(images, y, pixel_cache)]
        frames.append(pair_table(images, pa[same], pb[same], np.zeros(len(same), np.int16), "exact"))
    timings["search_s"] = time.perf_counter() - t

    embedding_used = None
    if config.embedding:
        embedder = embedder or ThumbnailEmbedder()
        t = time.perf_counter()
        frames.append(embedding_pairs(images, readable, config.embedding_threshold, embedder))
        embedding_used = embedder.description
        timings["embedding_s"] = time.perf_counter() - t

    pairs = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else \
        pd.DataFrame(columns=PAIR_COLUMNS)
    pairs = pairs.sort_values(["check", "distance", "image_b", "image_a"], kind="stable").reset_index(drop=True)
    return LeakReport(imageset, config, pairs, _summary(images, pairs, splits, config, imageset.has_sources),
                      unreadable, embedding_used, timings)


def _pixels(images: pd.DataFrame, i: int, cache: dict) -> str | None:
    if i not in cache:
        pixels = read_pixels(images["path"].iat[i])
        cache[i] = None if pixels is None else pixel_hash(pixels)
    return cache[i]


def _source_pairs(images: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Each image of split b whose video or group also gives images to split a, with one such image."""
    earlier = images[images["split"] == a]
    later = images[images["split"] == b]
    rows = []
    for column in ("video_id", "group"):
        first = earlier.drop_duplicates(column).set_index(column)["image"]
        hit = later[later[column].isin(first.index)]
        rows.append(pd.DataFrame({"image_a": first.loc[hit[column]].to_numpy(), "split_a": a,
                                  "image_b": hit["image"].to_numpy(), "split_b": b, "distance": 0.0,
                                  "check": "source"}))
    return pd.concat(rows, ignore_index=True).drop_duplicates("image_b")


def _summary(images: pd.DataFrame, pairs: pd.DataFrame, splits, config: LeakConfig, has_sources: bool):
    checks = [c for c in CHECKS if (c != "source" or has_sources) and (c != "embedding" or config.embedding)]
    rows = []
    for a, b in split_pairs(splits):
        total = int((images["split"] == b).sum())
        for check in checks:
            sel = pairs[(pairs["split_a"] == a) & (pairs["split_b"] == b) & (pairs["check"] == check)]
            leaking = sel["image_b"].nunique()
            rows.append((a, b, check, leaking, total, 100.0 * leaking / total if total else 0.0))
    return pd.DataFrame(rows, columns=["split_a", "split_b", "check", "leaking", "total", "percent"])


def clusters(pairs: pd.DataFrame) -> pd.DataFrame:
    """Connected groups of images linked by any leak pair: cluster, image, split, size."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    split_of = {}
    for r in pairs.itertuples():
        split_of[r.image_a], split_of[r.image_b] = r.split_a, r.split_b
        ra, rb = find(r.image_a), find(r.image_b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for image in split_of:
        members.setdefault(find(image), []).append(image)
    rows = []
    for n, root in enumerate(sorted(members, key=lambda r: (-len(members[r]), r))):
        for image in sorted(members[root]):
            rows.append((n, image, split_of[image], len(members[root])))
    return pd.DataFrame(rows, columns=["cluster", "image", "split", "size"])
