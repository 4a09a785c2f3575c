"""Data for context-aware emotion models: read, preprocess once, cache, batch, augment on tensors.

Preprocessing follows the reference code: the face is cut at the raw box and
resized to 96x96 (no margin, aspect not kept; zeros when there is no face); the
context is the whole frame with the face box set to 0 at full resolution, resized
to 128x171 (HxW). Both are stored once as uint8 arrays (memory-mapped .npy files in
a cache folder), so an epoch costs no JPEG decoding. Batches are then augmented as
tensors on the training device: context random crop 112 (centre crop [8:120,
29:141] for evaluation), face random horizontal flip and rotation up to 20 degrees.
Pixels are scaled to [0, 1]; ImageNet mean/std normalisation is an option.

Datasets: an `ncaer build` output (manifest.parquet), the NCAER-S release layout
(images/ + crop/*.txt), or an image-folder dataset (CAER-S) with a box file
(CSV: image,x1,y1,x2,y2, image paths relative to the dataset folder).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ncaer.corpus import CAER_CLASSES
from ncaer.imageset import load_imageset

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, preprocess


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


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    theta = degrees * math.pi / 180
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def epoch_order(n: int, train: bool, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Sample order of an epoch: a permutation seeded by (seed, epoch) in training; with `world` > 1
    this rank's share (every world-th, padded so all ranks get as many)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if train else np.arange(n)
    if world > 1:
        per_rank = math.ceil(n / world)
        order = np.concatenate([order, order[: per_rank * world - n]])[rank::world]
    return order


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The augmentation draws of an epoch on one rank."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 1009 + rank) & 0x7FFFFFFF)


def read_rows(array: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """array[idx] as a tensor, reading a memory-mapped array in file order."""
    order = np.argsort(idx)
    rows = array[idx[order]]
    return torch.from_numpy(rows[np.argsort(order)])


class EpochBatches:
    """What every batch iterator shares: the epoch's sample order (sharded across ranks) and its
    seeded augmentation draws. Subclasses set store, batch_size, train, seed, rank, world."""

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.store) / self.world) / self.batch_size)

    def index_batches(self, epoch: int):
        """(indices, generator) per batch of the epoch."""
        order = epoch_order(len(self.store), self.train, self.seed, epoch, self.rank, self.world)
        gen = epoch_generator(self.seed, epoch, self.rank)
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size], gen


class Batches(EpochBatches):
    """Batches of (face, context, label) tensors on `device`, augmented for training.

    Randomness (order, crops, flips, rotations) comes from a generator seeded with
    (seed, epoch), so an epoch is the same whether or not training was resumed.
    With `world` > 1 each rank takes every world-th sample of the epoch's order.
    """

    def __init__(self, store: ArrayStore, prep: Preprocess, batch_size: int, train: bool, device="cpu",
                 seed: int = 0, normalize: bool = False, rank: int = 0, world: int = 1, on_device: bool = False,
                 channels_last: bool = False, max_rotation: float = 20.0):
        self.store, self.prep, self.batch_size, self.train = store, prep, batch_size, train
        self.device, self.seed, self.rank, self.world = torch.device(device), seed, rank, world
        self.channels_last, self.max_rotation = channels_last, max_rotation
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) if normalize else None
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) if normalize else None
        if on_device:  # the whole uint8 store on the accelerator: batches are then pure indexing
            self.faces = torch.from_numpy(np.ascontiguousarray(store.faces)).to(self.device)
            self.contexts = torch.from_numpy(np.ascontiguousarray(store.contexts)).to(self.device)
        else:
            self.faces = self.contexts = None
        self.labels = torch.from_numpy(store.labels)

    def _gather(self, idx: np.ndarray):
        if self.faces is not None:
            t = torch.from_numpy(idx).to(self.device)
            return self.faces[t], self.contexts[t]
        faces, contexts = read_rows(self.store.faces, idx), read_rows(self.store.contexts, idx)
        if self.device.type == "cuda":
            faces, contexts = faces.pin_memory(), contexts.pin_memory()
        return faces.to(self.device, non_blocking=True), contexts.to(self.device, non_blocking=True)

    def epoch(self, epoch: int = 0):
        crop, (cy, cx) = self.prep.crop, self.prep.centre
        for idx, gen in self.index_batches(epoch):
            faces, contexts = self._gather(idx)
            faces = faces.permute(0, 3, 1, 2).float().div_(255)
            contexts = contexts.permute(0, 3, 1, 2).float().div_(255)
            b = len(idx)
            if self.train:
                ys = torch.randint(0, self.prep.context_height - crop + 1, (b,), generator=gen)
                xs = torch.randint(0, self.prep.context_width - crop + 1, (b,), generator=gen)
                rows = (ys[:, None] + torch.arange(crop)).to(self.device)
                cols = (xs[:, None] + torch.arange(crop)).to(self.device)
                batch = torch.arange(b, device=self.device)[:, None, None]
                contexts = contexts.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
                flip = (torch.rand(b, generator=gen) < 0.5).to(self.device)
                faces = torch.where(flip[:, None, None, None], faces.flip(3), faces)
                angles = ((torch.rand(b, generator=gen) * 2 - 1) * self.max_rotation).to(self.device)
                faces = _rotate(faces, angles)
            else:
                contexts = contexts[:, :, cy : cy + crop, cx : cx + crop]
            if self.mean is not None:
                faces = (faces - self.mean) / self.std
                contexts = (contexts - self.mean) / self.std
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            yield (faces.contiguous(memory_format=layout), contexts.contiguous(memory_format=layout),
                   self.labels[torch.from_numpy(idx)].to(self.device), idx)


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
    h, w = bgr.shape[:2]
    if target is not None:
        tgt = cv2.imread(target, cv2.IMREAD_COLOR)
        tgt = np.zeros_like(bgr) if tgt is None else tgt
        sx, sy = size / w, size / h
        out_box = (0, 0, size, size) if box is None else (
            round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
    else:
        if box is not None:
            x1, y1, x2, y2 = (int(v) for v in box)
            bgr = bgr[max(y1, 0):y2, max(x1, 0):x2] if (y2 > y1 and x2 > x1) else bgr
        tgt, out_box = bgr, (0, 0, size, size)
    pair = []
    for img in (bgr, tgt):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None] if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        pair.append(img)
    return pair[0], pair[1], out_box, ""


class ImageStore:
    """uint8 images and targets (N, S, S, C), face boxes (N, 4) in output pixels, labels."""

    def __init__(self, folder: Path):
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


class ImageBatches(EpochBatches):
    """Batches of (images, targets, labels, indices) as float NCHW in [0, 1]; training flips both alike."""

    def __init__(self, store: ImageStore, batch_size: int, train: bool, device="cpu", seed: int = 0,
                 normalize: bool = False, rank: int = 0, world: int = 1, channels_last: bool = False):
        self.store, self.batch_size, self.train = store, batch_size, train
        self.device, self.seed, self.rank, self.world = torch.device(device), seed, rank, world
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def epoch(self, epoch: int = 0):
        for idx, gen in self.index_batches(epoch):
            pair = [read_rows(a, idx).to(self.device).permute(0, 3, 1, 2).float().div_(255)
                    for a in (self.store.images, self.store.targets)]
            if self.train:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(self.device)[:, None, None, None]
                pair = [torch.where(flip, x.flip(3), x) for x in pair]
            images, targets = (x.contiguous(memory_format=self.layout) for x in pair)
            yield images, targets, torch.from_numpy(self.store.labels[idx]).to(self.device), idx


def reconstruction_figures(out: dict, targets: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, for a model that rebuilds the face (FERAtt): the attended image's MSE against the
    clean face, and the share of attention inside the face box."""
    rec = (out["attended"].float() - targets.float()).pow(2).mean((1, 2, 3))
    return rec, attention_in_box(out["attention"].float(), boxes)


def attention_in_box(attention: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """Share of each (S, S) attention map's mass inside its face box (x1, y1, x2, y2 in map pixels)."""
    b, h, w = attention.shape
    ys = torch.arange(h, device=attention.device)[None, :, None]
    xs = torch.arange(w, device=attention.device)[None, None, :]
    bx = torch.as_tensor(boxes, device=attention.device)
    inside = ((ys >= bx[:, 1, None, None]) & (ys < bx[:, 3, None, None]) &
              (xs >= bx[:, 0, None, None]) & (xs < bx[:, 2, None, None]))
    return (attention * inside).sum((1, 2)) / attention.sum((1, 2)).clamp(min=1e-12)
