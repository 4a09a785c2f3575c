"""Preprocessed arrays, made once and memory-mapped: frames (face + context), whole images with
their reconstruction targets (FERAtt), and clips of face crops.

Preprocessing follows the reference code (`preprocess`). Each store lives in a cache
folder named by a hash of its inputs and settings, so it is reused while they match;
it is written under a temporary name and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .preprocess import Preprocess, face_image, preprocess


def _load_one(args) -> tuple[np.ndarray, np.ndarray, str]:
    path, box, prep = args
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        blank = preprocess(np.zeros((prep.context_height, prep.context_width, 3), np.uint8), None, prep)
        return blank[0], blank[1], f"unreadable image {path}"
    return (*preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), box, prep), "")


def default_cache_dir() -> str:
    """Where preprocessed arrays are kept unless --cache-dir says otherwise."""
    return os.path.join(os.path.expanduser("~"), ".cache", "ncaer", "arrays")


def publish(tmp: Path, folder: Path) -> None:
    """Move a finished cache folder into place (atomic); if another process made it first, keep theirs."""
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


class ArrayStore:
    """uint8 faces (N, S, S, 3) and contexts (N, H, W, 3), with int64 labels."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.faces = np.load(folder / "faces.npy", mmap_mode="r")
        self.contexts = np.load(folder / "contexts.npy", mmap_mode="r")
        self.labels = np.load(folder / "labels.npy")

    def __len__(self) -> int:
        return len(self.labels)


def cache_store(samples: pd.DataFrame, prep: Preprocess, cache_dir: str | Path, workers: int = 1,
                progress=None) -> ArrayStore:
    """Preprocess `samples` once into a memory-mapped array store; reused while inputs and settings match."""
    key = hashlib.sha256(json.dumps({
        "prep": asdict(prep),
        "samples": [(p, os.path.getsize(p) if os.path.exists(p) else -1, str(b), int(y))
                    for p, b, y in zip(samples["path"], samples["box"], samples["label_id"])],
    }).encode()).hexdigest()[:20]
    folder = Path(cache_dir) / key
    if (folder / "labels.npy").is_file():
        return ArrayStore(folder)
    tmp = Path(cache_dir) / f".{key}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(samples)
    faces = np.lib.format.open_memmap(tmp / "faces.npy", "w+", np.uint8, (n, prep.face_size, prep.face_size, 3))
    contexts = np.lib.format.open_memmap(tmp / "contexts.npy", "w+", np.uint8,
                                         (n, prep.context_height, prep.context_width, 3))
    jobs = [(p, b, prep) for p, b in zip(samples["path"], samples["box"])]
    problems = []
    pool = ProcessPoolExecutor(workers) if workers > 1 and n > 256 else None
    results = pool.map(_load_one, jobs, chunksize=32) if pool else map(_load_one, jobs)
    for i, (face, context, error) in enumerate(results):
        faces[i], contexts[i] = face, context
        if error:
            problems.append(error)
        if progress:
            progress(i + 1, n)
    if pool:
        pool.shutdown()
    faces.flush()
    contexts.flush()
    del faces, contexts
    np.save(tmp / "labels.npy", samples["label_id"].to_numpy(np.int64))
    (tmp / "problems.txt").write_text("\n".join(problems))
    publish(tmp, folder)
    return ArrayStore(folder)


# --- whole images with a reconstruction target (FERAtt and its baseline) ---

def _load_image_pair(args) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """(image, target, box in output pixels, error) at size x size.

    Synthetic samples: the composite and its clean face on black. Otherwise the face
    crop is both the image and the target (clean faces)."""
    path, box, target, size, gray = args
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        blank = np.zeros((size, size, 1 if gray else 3), np.uint8)
        return blank, blank, (0, 0, size, size), f"unreadable image {path}"
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if target is None:  # clean faces
        face = face_image(rgb, box, size, gray)
        return face, face, (0, 0, size, size), ""
    tgt = cv2.imread(target, cv2.IMREAD_COLOR)
    tgt = np.zeros_like(rgb) if tgt is None else cv2.cvtColor(tgt, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    sx, sy = size / w, size / h
    out_box = (0, 0, size, size) if box is None else (
        round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
    return face_image(rgb, None, size, gray), face_image(tgt, None, size, gray), out_box, ""


class ImageStore:
    """uint8 images and targets (N, S, S, C), face boxes (N, 4) in output pixels, labels."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.targets = np.load(folder / "targets.npy", mmap_mode="r")
        self.boxes = np.load(folder / "boxes.npy")
        self.labels = np.load(folder / "labels.npy")

    def __len__(self) -> int:
        return len(self.labels)


def image_store(samples: pd.DataFrame, size: int, grayscale: bool, cache_dir: str | Path,
                workers: int = 1) -> ImageStore:
    key = hashlib.sha256(json.dumps({
        "size": size, "gray": grayscale,
        "samples": [(p, os.path.getsize(p) if os.path.exists(p) else -1, str(b), str(t), int(y))
                    for p, b, t, y in zip(samples["path"], samples["box"], samples["target"], samples["label_id"])],
    }).encode()).hexdigest()[:20]
    folder = Path(cache_dir) / f"images-{key}"
    if (folder / "labels.npy").is_file():
        return ImageStore(folder)
    tmp = Path(cache_dir) / f".images-{key}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, c = len(samples), 1 if grayscale else 3
    images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, size, size, c))
    targets = np.lib.format.open_memmap(tmp / "targets.npy", "w+", np.uint8, (n, size, size, c))
    boxes = np.zeros((n, 4), np.int64)
    jobs = [(p, b, t, size, grayscale) for p, b, t in zip(samples["path"], samples["box"], samples["target"])]
    pool = ProcessPoolExecutor(workers) if workers > 1 and n > 256 else None
    problems = []
    for i, (img, tgt, box, error) in enumerate(pool.map(_load_image_pair, jobs, chunksize=32) if pool
                                                else map(_load_image_pair, jobs)):
        images[i], targets[i], boxes[i] = img, tgt, box
        if error:
            problems.append(error)
    if pool:
        pool.shutdown()
    images.flush()
    targets.flush()
    del images, targets
    np.save(tmp / "boxes.npy", boxes)
    np.save(tmp / "labels.npy", samples["label_id"].to_numpy(np.int64))
    (tmp / "problems.txt").write_text("\n".join(problems))
    publish(tmp, folder)
    return ImageStore(folder)


# --- clips of face crops (video models) ---

class ClipStore:
    """uint8 face crops (N, T, S, S, 3), frame mask (N, T), labels (N,), video ids."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.faces = np.load(folder / "faces.npy", mmap_mode="r")
        self.mask = np.load(folder / "mask.npy")
        self.labels = np.load(folder / "labels.npy")
        self.video_ids = (folder / "video_ids.txt").read_text().splitlines()

    def __len__(self) -> int:
        return len(self.labels)


def clip_store(build: Path, split: str, frames: int, prep: Preprocess, cache_dir: str | Path) -> ClipStore:
    """The face crops of each clip of a split, T per clip (missing frames repeat the last real one, masked out)."""
    m = pd.read_parquet(build / "manifest.parquet")
    m = m[m["split"] == split].sort_values(["video_id", "segment"])
    if m.empty:
        raise ValueError(f"{build} has no {split!r} samples")
    key = hashlib.sha256(json.dumps([str(build.resolve()), os.path.getmtime(build / "manifest.parquet"), split,
                                     frames, prep.face_size]).encode()).hexdigest()[:20]
    folder = Path(cache_dir) / f"clips-{key}"
    if (folder / "labels.npy").is_file():
        return ClipStore(folder)
    groups = list(m.groupby("video_id", sort=True))
    tmp = Path(cache_dir) / f".clips-{key}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    faces = np.lib.format.open_memmap(tmp / "faces.npy", "w+", np.uint8,
                                      (len(groups), frames, prep.face_size, prep.face_size, 3))
    mask = np.zeros((len(groups), frames), bool)
    labels = np.zeros(len(groups), np.int64)
    for i, (_, rows) in enumerate(groups):
        rows = rows.head(frames)
        labels[i] = rows["label_id"].iat[0]
        for t, r in enumerate(rows.itertuples()):
            if not r.has_face:
                continue
            bgr = cv2.imread(str(build / r.image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            box = (r.face_x1, r.face_y1, r.face_x2, r.face_y2)
            faces[i, t] = preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), box, prep)[0]
            mask[i, t] = True
        real = np.flatnonzero(mask[i])
        if len(real):  # pad with the last real frame (masked out of the pooling)
            for t in range(frames):
                if not mask[i, t]:
                    faces[i, t] = faces[i, real[real <= t][-1] if (real <= t).any() else real[0]]
        else:
            mask[i] = True  # no face anywhere: the clip is kept (all black) so it still counts in evaluation
    faces.flush()
    del faces
    np.save(tmp / "mask.npy", mask)
    np.save(tmp / "labels.npy", labels)
    (tmp / "video_ids.txt").write_text("\n".join(str(v) for v, _ in groups))
    publish(tmp, folder)
    return ClipStore(folder)
