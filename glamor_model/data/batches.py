"""Batches for every model family, augmented as tensors on the training device.

An epoch's sample order and augmentation draws come from generators seeded by (seed,
epoch, rank), so an epoch is the same whether or not training was resumed. Frames:
context random crop 112 (centre crop [8:120, 29:141] for evaluation), face random
horizontal flip and rotation up to 20 degrees. Pixels are scaled to [0, 1];
ImageNet mean/std normalisation is an option.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .stores import ArrayStore, ClipStore, ImageStore


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


class ClipBatches(EpochBatches):
    """Batches of (clips (B, T, 3, S, S), mask (B, T), labels, indices); one flip and one rotation per clip."""

    def __init__(self, store: ClipStore, batch_size: int, train: bool, device="cpu", seed: int = 0,
                 normalize: bool = False, rank: int = 0, world: int = 1, max_rotation: float = 20.0, **_):
        self.store, self.batch_size, self.train = store, batch_size, train
        self.device, self.seed, self.rank, self.world = torch.device(device), seed, rank, world
        self.normalize, self.max_rotation = normalize, max_rotation

    def epoch(self, epoch: int = 0):
        for idx, gen in self.index_batches(epoch):
            clips = read_rows(self.store.faces, idx).to(self.device)
            b, t = clips.shape[:2]
            clips = clips.permute(0, 1, 4, 2, 3).float().div_(255)
            if self.train:
                flip = (torch.rand(b, generator=gen) < 0.5).to(self.device)
                clips = torch.where(flip[:, None, None, None, None], clips.flip(4), clips)
                angles = ((torch.rand(b, generator=gen) * 2 - 1) * self.max_rotation).to(self.device)
                clips = _rotate(clips.flatten(0, 1), angles.repeat_interleave(t)).view(clips.shape)
            if self.normalize:
                mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 1, 3, 1, 1)
                std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 1, 3, 1, 1)
                clips = (clips - mean) / std
            mask = torch.from_numpy(self.store.mask[idx]).to(self.device)
            yield clips, mask, torch.from_numpy(self.store.labels[idx]).to(self.device), idx
