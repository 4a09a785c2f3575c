"""Training composites rendered afresh on every draw, as FERAtt's reference trains (its dataset pastes
a face on a random background each time an item is read): `--fresh-composites` with an `ncaer synth`
output as the data.

The training samples stay the synth output's, but each draw renders its face again on a new
background with new warp and light, as `ncaer synth` would (same options, read from its build.json).
A draw is a function of (seed, epoch, sample) alone, so a resumed run, any number of ranks and any
number of loader workers see the same composites, and every epoch sees new ones. Validation and
evaluation use the pre-rendered composites.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ncaer.dataset.manifest import read_manifest
from ncaer.synth.composite import SynthConfig, backgrounds_by_split, render

from .batches import ImageBatches, default_loader_workers
from .preprocess import face_image


class CompositeSource:
    """Per training sample its face's `ncaer build` row and label; the backgrounds of the training split."""

    def __init__(self, rows: list[dict], labels: np.ndarray, synth: SynthConfig,
                 backgrounds: list[tuple[str, str]], image_size: int, grayscale: bool):
        self.rows, self.labels, self.synth, self.backgrounds = rows, labels, synth, backgrounds
        self.image_size, self.grayscale = image_size, grayscale

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, i: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample i's composite and target for (seed, epoch), uint8 (S, S, C), as the image store
        prepares a pre-rendered one."""
        made = render(self.rows[i], self.synth, self.backgrounds, np.random.default_rng([seed, epoch, i]))
        if isinstance(made, str):  # an unreadable face or background: the user's data, named
            raise ValueError(f"--fresh-composites: {made}")
        composite, target = (cv2.cvtColor(x, cv2.COLOR_BGR2RGB) for x in made[:2])
        return (face_image(composite, None, self.image_size, self.grayscale),
                face_image(target, None, self.image_size, self.grayscale))


def composite_source(data: str | Path, samples: pd.DataFrame, image_size: int, grayscale: bool) -> CompositeSource:
    """The training `samples` of the `ncaer synth` output `data` as (face, background) sources."""
    data = Path(data)
    info = json.loads((data / "build.json").read_text()) if (data / "build.json").is_file() else {}
    if info.get("kind") != "synthetic":
        raise ValueError(f"--fresh-composites needs an `ncaer synth` output as --data; {data} is not one")
    synth = SynthConfig(**info["synth"])
    if not (Path(synth.faces) / "manifest.parquet").is_file():
        raise ValueError(f"{data} was made from faces at {synth.faces}, which are not there: --fresh-composites "
                         "renders from them")
    faces = read_manifest(synth.faces)
    faces = faces[faces["has_face"]]
    source_of = read_manifest(data).set_index("sample_id")["source_sample"]
    by_id = faces.set_index("sample_id", drop=False)
    rows = [by_id.loc[source_of[s]].to_dict() for s in samples["sample_id"]]
    backgrounds = backgrounds_by_split(synth, faces).get("train", [])
    if not backgrounds:
        raise ValueError(f"{synth.faces} has no training background to render on")
    return CompositeSource(rows, np.array(samples["label_id"], np.int64), synth, backgrounds, image_size, grayscale)


class _Draws(Dataset):
    """A batch of samples' composites of one epoch: loader workers render them."""

    def __init__(self, source: CompositeSource, seed: int, epoch: int):
        self.source, self.seed, self.epoch = source, seed, epoch

    def __getitem__(self, idx: np.ndarray) -> list[torch.Tensor]:
        pairs = [self.source.draw(int(i), self.seed, self.epoch) for i in idx]
        return [torch.from_numpy(np.stack(x)) for x in zip(*pairs)]


class CompositeBatches(ImageBatches):
    """`ImageBatches` whose images and targets are rendered for the batch instead of read from a store."""

    def __init__(self, source: CompositeSource, batch_size: int, train: bool, device="cpu", seed: int = 0,
                 rank: int = 0, world: int = 1, channels_last: bool = False, on_device: bool = False,
                 loader_workers: int | None = None):
        # rendered on the host whatever `on_device` says: there is no store to keep on the device
        super().__init__(source, batch_size, train, device, seed, rank, world, channels_last, False, 0)
        self.loader_workers = default_loader_workers(self.device) if loader_workers is None else loader_workers

    def _reader(self, epoch: int) -> Dataset:
        return _Draws(self.store, self.seed, epoch)
