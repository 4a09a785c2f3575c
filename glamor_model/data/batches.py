"""Batches for every model family, augmented as tensors on the training device.

An epoch's sample order and augmentation draws come from a generator seeded by (seed,
epoch) and are drawn for the whole epoch, one set per position in the order, before the
order is shared among the ranks. A sample is therefore augmented alike whether or not
training was resumed and however many processes share the epoch. Frames: context random
crop 112 (centre crop [8:120, 29:141] for evaluation), face random horizontal flip and
rotation up to 20 degrees. Pixels are scaled to [0, 1]; ImageNet mean/std normalisation
is an option.

No step waits for the device: the epoch's order and draws go to the device once per
epoch, labels stay there, and arrays that stay in memory-mapped files are read by a
`DataLoader` (workers, pinned memory, prefetch) and copied without blocking.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .stores import ArrayStore, ClipStore, ImageStore


def _rotate(x: torch.Tensor, degrees: torch.Tensor, fill: str = "border") -> torch.Tensor:
    """Keras' random_rotation as GLAMOR-Net's reference applies it: bilinear, about the centre, the
    outside filled with the nearest edge pixel (scipy's mode 'nearest'; tested against scipy).
    The clip models, not yet traced to their reference, keep the reflection they were built with."""
    theta = degrees * math.pi / 180
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=fill, align_corners=False)


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of an epoch's positions: every world-th, padded (repeating the order from its
    start, as often as needed) so all ranks get as many. Rank r's k-th batch of b is then part of the
    one-process batch k of b * world."""
    if world == 1:
        return order
    per_rank = math.ceil(len(order) / world)
    return np.resize(order, per_rank * world)[rank::world]


def epoch_order(n: int, train: bool, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Sample order of an epoch: a permutation seeded by (seed, epoch) in training; with `world` > 1
    this rank's share."""
    return shard(np.random.default_rng([seed, epoch]).permutation(n) if train else np.arange(n), rank, world)


def epoch_draws(n: int, k: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """k uniform numbers in [0, 1) per position of the epoch's order (this rank's share): the
    augmentation draws, independent of the number of ranks."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 1009) & 0x7FFFFFFF)
    draws = torch.rand(n, k, generator=gen)
    return draws[torch.from_numpy(shard(np.arange(n), rank, world))]


def read_rows(array: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """array[idx] as a tensor, reading a memory-mapped array in file order."""
    order = np.argsort(idx)
    rows = array[idx[order]]
    return torch.from_numpy(rows[np.argsort(order)])


class _Rows(Dataset):
    """Rows of a store's arrays by batch of indices. For loader workers it holds file names, not arrays,
    so a worker opens the memory-mapped files itself instead of receiving a pickled copy; in this
    process it is given the arrays."""

    def __init__(self, folder: Path | None, names: tuple[str, ...], arrays: list[np.ndarray] | None = None):
        self.folder, self.names, self.arrays = folder, names, arrays

    def __getitem__(self, idx: np.ndarray) -> list[torch.Tensor]:
        if self.arrays is None:
            self.arrays = [np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in self.names]
        return [read_rows(a, idx) for a in self.arrays]


def default_loader_workers(device: torch.device) -> int:
    """Loader processes when arrays stay on disk: 4 feeding a GPU, none for the CPU (which trains)."""
    return 4 if device.type == "cuda" else 0


class EpochBatches:
    """What every family's batches share: the epoch's order and draws, sharded across ranks, and the
    uint8 arrays of each batch, read on the host or indexed on the device.

    `arrays` names the store's per-sample arrays a batch holds; `draws` is the number of
    uniform draws a training sample takes."""

    arrays: tuple[str, ...] = ()
    draws: int = 0

    def __init__(self, store, batch_size: int, train: bool, device="cpu", seed: int = 0, rank: int = 0,
                 world: int = 1, on_device: bool = False, loader_workers: int | None = None):
        self.store, self.batch_size, self.train = store, batch_size, train
        self.device, self.seed, self.rank, self.world = torch.device(device), seed, rank, world
        self.labels = torch.from_numpy(np.asarray(store.labels)).to(self.device)
        if on_device:  # the whole uint8 store on the accelerator: batches are then pure indexing
            self.resident = [torch.from_numpy(np.array(getattr(store, a))).to(self.device)  # a writable copy
                             for a in self.arrays]
        else:
            self.resident = None
        self.loader_workers = default_loader_workers(self.device) if loader_workers is None else loader_workers
        if self.loader_workers and getattr(store, "folder", None) is None:
            self.loader_workers = 0  # arrays in memory, not in files: nothing for a worker to open

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.store) / self.world) / self.batch_size)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            x = x if x.is_pinned() else x.pin_memory()
            return x.to(self.device, non_blocking=True)
        return x

    def _reader(self, epoch: int) -> Dataset:
        """What gives a batch's uint8 arrays from its host indices (`epoch`: for arrays made per epoch,
        data.composites)."""
        if self.loader_workers:
            return _Rows(self.store.folder, self.arrays)
        return _Rows(None, self.arrays, [getattr(self.store, a) for a in self.arrays])

    def _host_batches(self, chunks: list[np.ndarray], epoch: int):
        """uint8 arrays of each batch read on the host: in loader workers, or here."""
        reader = self._reader(epoch)
        if not self.loader_workers:
            return (reader[idx] for idx in chunks)
        # its own generator: a DataLoader otherwise seeds its workers from the global one, and every
        # dropout draw after it would depend on the number of loader workers
        return iter(DataLoader(reader, sampler=chunks, batch_size=None, num_workers=self.loader_workers,
                               pin_memory=self.device.type == "cuda", prefetch_factor=4, persistent_workers=False,
                               generator=torch.Generator()))

    def raw_epoch(self, epoch: int = 0):
        """Per batch: its uint8 arrays and training draws (None in evaluation) on the device, its labels
        there, and its host indices; `make` turns them into the model's inputs."""
        order = epoch_order(len(self.store), self.train, self.seed, epoch, self.rank, self.world)
        draws = (self._to_device(epoch_draws(len(self.store), self.draws, self.seed, epoch, self.rank, self.world))
                 if self.train and self.draws else None)
        order_dev = self._to_device(torch.from_numpy(order))
        chunks = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        host = None if self.resident is not None else self._host_batches(chunks, epoch)
        for k, idx in enumerate(chunks):
            at = slice(k * self.batch_size, k * self.batch_size + len(idx))
            t = order_dev[at]
            arrays = [a[t] for a in self.resident] if host is None else [self._to_device(a) for a in next(host)]
            yield arrays, draws[at] if draws is not None else None, self.labels[t], idx

    def epoch(self, epoch: int = 0):
        """Per batch: the family's tensors (built by `make`, labels last) and the batch's host indices."""
        for arrays, draws, labels, idx in self.raw_epoch(epoch):
            yield *self.make(arrays, draws, labels), idx

    def make(self, arrays: list[torch.Tensor], draws: torch.Tensor | None, labels: torch.Tensor) -> tuple:
        raise NotImplementedError


def _unit(x: torch.Tensor, channels_first_at: int) -> torch.Tensor:
    """uint8 ...HWC -> float ...CHW in [0, 1]."""
    dims = list(range(x.dim()))
    dims.insert(channels_first_at, dims.pop())
    return x.permute(*dims).float().div_(255)


class Batches(EpochBatches):
    """Frame models: (faces, contexts, labels, host indices) on `device`, augmented for training."""

    arrays, draws = ("faces", "contexts"), 4  # context crop y, x; face flip; face rotation

    def __init__(self, store: ArrayStore, prep: Preprocess, batch_size: int, train: bool, device="cpu",
                 seed: int = 0, normalize: bool = False, rank: int = 0, world: int = 1, on_device: bool = False,
                 channels_last: bool = False, max_rotation: float = 20.0, loader_workers: int | None = None,
                 augment_face: bool = True):
        super().__init__(store, batch_size, train, device, seed, rank, world, on_device, loader_workers)
        self.prep, self.max_rotation, self.augment_face = prep, max_rotation, augment_face
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) if normalize else None
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) if normalize else None
        self.offsets = torch.arange(prep.crop, device=self.device)

    def make(self, arrays, draws, labels):
        crop, (cy, cx) = self.prep.crop, self.prep.centre
        faces, contexts = arrays
        faces = _unit(faces, 1)
        if draws is not None:
            b = len(draws)
            ys = (draws[:, 0] * (self.prep.context_height - crop + 1)).long()
            xs = (draws[:, 1] * (self.prep.context_width - crop + 1)).long()
            rows, cols = ys[:, None] + self.offsets, xs[:, None] + self.offsets
            batch = torch.arange(b, device=self.device)[:, None, None]
            contexts = _unit(contexts[batch, rows[:, :, None], cols[:, None, :]], 1)
            if self.augment_face:  # the draws are made either way: the crops do not depend on it
                faces = torch.where((draws[:, 2] < 0.5)[:, None, None, None], faces.flip(3), faces)
                faces = _rotate(faces, (draws[:, 3] * 2 - 1) * self.max_rotation)
        else:
            contexts = _unit(contexts[:, cy : cy + crop, cx : cx + crop], 1)
        if self.mean is not None:
            faces = (faces - self.mean) / self.std
            contexts = (contexts - self.mean) / self.std
        return faces.contiguous(memory_format=self.layout), contexts.contiguous(memory_format=self.layout), labels


class ImageBatches(EpochBatches):
    """Face-image models: (images, targets, labels, host indices), float NCHW in [0, 1]; training flips
    image and target alike."""

    arrays, draws = ("images", "targets"), 1

    def __init__(self, store: ImageStore, batch_size: int, train: bool, device="cpu", seed: int = 0,
                 rank: int = 0, world: int = 1, channels_last: bool = False, on_device: bool = False,
                 loader_workers: int | None = None):
        super().__init__(store, batch_size, train, device, seed, rank, world, on_device, loader_workers)
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def make(self, arrays, draws, labels):
        pair = [_unit(x, 1) for x in arrays]
        if draws is not None:
            flip = (draws[:, 0] < 0.5)[:, None, None, None]
            pair = [torch.where(flip, x.flip(3), x) for x in pair]
        images, targets = (x.contiguous(memory_format=self.layout) for x in pair)
        return images, targets, labels


class ClipBatches(EpochBatches):
    """Clip models: (clips (B, T, 3, S, S), frame mask (B, T), labels, host indices); one flip and one
    rotation per clip."""

    arrays, draws = ("faces", "mask"), 2

    def __init__(self, store: ClipStore, batch_size: int, train: bool, device="cpu", seed: int = 0,
                 normalize: bool = False, rank: int = 0, world: int = 1, max_rotation: float = 20.0,
                 on_device: bool = False, loader_workers: int | None = None, **_):
        super().__init__(store, batch_size, train, device, seed, rank, world, on_device, loader_workers)
        self.max_rotation = max_rotation
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 1, 3, 1, 1) if normalize else None
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 1, 3, 1, 1) if normalize else None

    def make(self, arrays, draws, labels):
        clips, mask = arrays
        clips = _unit(clips, 2)
        b, t = clips.shape[:2]
        if draws is not None:
            clips = torch.where((draws[:, 0] < 0.5)[:, None, None, None, None], clips.flip(4), clips)
            angles = (draws[:, 1] * 2 - 1) * self.max_rotation
            clips = _rotate(clips.flatten(0, 1), angles.repeat_interleave(t), "reflection").view(clips.shape)
        if self.mean is not None:
            clips = (clips - self.mean) / self.std
        return clips, mask, labels
