"""Clip-level emotion: per-frame CNN with spatial attention, pooled over time.

After "Emotion Recognition with Spatial Attention and Temporal Softmax Pooling"
(Aminbeidokhti et al., 2019): each of T face crops goes through a 2-D CNN (the
GLAMOR face encoder, or ResNet-18); a spatial attention (1x1 conv, softmax over
positions) pools its last feature map; a classifier gives per-frame class
probabilities p_t; temporal softmax pooling with a learned beta weights the
frames per class, w_tc = softmax_t(beta * p_tc), and the clip score is
S_c = sum_t w_tc p_tc. `video-mean` and `video-max` pool the same probabilities by
mean and max, for comparison. beta starts at 5: with probabilities in [0, 1], beta 1
would pool almost like the mean.

Data: T frames per clip chosen by the same segment sampler as `ncaer build`, with
the subject's face from the detector. A video corpus is built once (into the cache
folder, by `ncaer build` with --segments T); the face crops of each clip are then
cached as one uint8 array, so frames are decoded once, not every epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import EpochBatches, _rotate, publish, read_rows
from .glamor import ConvEncoder, ResNetFaceEncoder
from .pooling import temporal_softmax_pool
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, preprocess
from .registry import register_model


class TemporalSoftmaxPool(nn.Module):
    """Temporal softmax pooling with a learned beta."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return temporal_softmax_pool(scores, self.beta, mask)


class SpatialAttentionPool(nn.Module):
    """Softmax over the positions of a 1x1-conv score map; returns the weighted sum and the weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def forward(self, fmap):
        weights = torch.softmax(self.score(fmap).flatten(1), dim=1)
        return (fmap.flatten(2) * weights[:, None, :]).sum(2), weights


BACKBONES = ("conv", "resnet18")  # per-frame CNN: GLAMOR's face encoder, or the ResNet-18 face branch
VIDEO_OPTIONS = ("backbone", "face_weights")


class VideoNet(nn.Module):
    def __init__(self, num_classes: int = 7, pooling: str = "softmax", backbone: str = "conv",
                 face_weights: str | None = None, beta: float = 5.0, dropout: float = 0.5):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
        if face_weights and backbone != "resnet18":
            raise ValueError("face weights are for the resnet18 backbone (--backbone resnet18)")
        self.encoder = ConvEncoder() if backbone == "conv" else ResNetFaceEncoder(face_weights)
        self.spatial = SpatialAttentionPool(self.encoder.out_channels)
        self.classifier = nn.Sequential(nn.Linear(self.encoder.out_channels, 128), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(128, num_classes))
        self.pooling = pooling
        self.temporal = TemporalSoftmaxPool(beta) if pooling == "softmax" else None

    def forward_all(self, clips: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips (B, T, 3, S, S), mask (B, T) of real frames -> clip log-probabilities and what led to them."""
        b, t = clips.shape[:2]
        vec, spatial = self.spatial(self.encoder(clips.flatten(0, 1)))
        frame_probs = torch.softmax(self.classifier(vec).float(), dim=1).view(b, t, -1)
        mask = mask.bool()
        if self.pooling == "softmax":
            scores = self.temporal(frame_probs, mask)
        elif self.pooling == "mean":
            scores = (frame_probs * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        else:
            scores = frame_probs.masked_fill(~mask[..., None], -1.0).amax(1).clamp(min=0)
        scores = scores.clamp(min=1e-8)
        return {"logits": torch.log(scores / scores.sum(1, keepdim=True)), "frame_probs": frame_probs,
                "spatial_attention": spatial.view(b, t, -1)}

    def forward(self, clips, mask):
        return self.forward_all(clips, mask)["logits"]


@register_model("video-tsp", "clips: face CNN + spatial attention per frame, learned temporal softmax pooling",
                family="video", options=VIDEO_OPTIONS)
def video_tsp(num_classes=7, **kw):
    return VideoNet(num_classes, "softmax", **kw)


@register_model("video-mean", "clips: as video-tsp with mean pooling over frames", family="video",
                options=VIDEO_OPTIONS)
def video_mean(num_classes=7, **kw):
    return VideoNet(num_classes, "mean", **kw)


@register_model("video-max", "clips: as video-tsp with max pooling over frames", family="video",
                options=VIDEO_OPTIONS)
def video_max(num_classes=7, **kw):
    return VideoNet(num_classes, "max", **kw)


def ensure_build(data: str | Path, frames: int, cache_dir: str | Path, workers: int) -> Path:
    """An `ncaer build` of `data`: `data` itself if it is one, else a build made once into the cache."""
    data = Path(data)
    if (data / "manifest.parquet").is_file():
        return data
    from ncaer.build import run_build
    from ncaer.config import BuildConfig

    config = BuildConfig(videos=str(data.resolve()), out="", segments=frames, workers=workers)
    out = Path(cache_dir) / "builds" / config.fingerprint()  # the fingerprint ignores `out`
    if not (out / "manifest.parquet").is_file():
        run_build(replace(config, out=str(out)), overwrite=True)
    return out


class ClipStore:
    """uint8 face crops (N, T, S, S, 3), frame mask (N, T), labels (N,), video ids."""

    def __init__(self, folder: Path):
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


def evaluate_clips(model, ckpt: dict, data: str, split: str, out: Path, device, cache_dir: str, workers: int,
                   beta: float) -> dict:
    """Clip accuracy of a video model with its own pooling, and of its frame probabilities pooled by
    mean, max and temporal softmax with a fixed beta, for comparison."""
    from ncaer.manifest import write_csv

    from .evaluate import classification_metrics, plot_confusion
    from .pooling import POOLINGS, pool

    config = ckpt["config"]
    prep = Preprocess(**ckpt["prep"])
    build = ensure_build(data, config["frames"], cache_dir, workers)
    store = clip_store(build, split, config["frames"], prep, cache_dir)
    batches = ClipBatches(store, 32, False, device=device, normalize=ckpt["normalize"])
    logits, frame_probs = [], []
    with torch.inference_mode():
        for clips, mask, _, _ in batches.epoch(0):
            res = model.forward_all(clips, mask)
            logits.append(res["logits"].cpu())
            frame_probs.append(res["frame_probs"].cpu())
    logits, frame_probs = torch.cat(logits).numpy(), torch.cat(frame_probs).numpy()
    classes, labels = ckpt["classes"], store.labels
    results = {"samples": len(labels), "unit": "clip", **classification_metrics(labels, logits.argmax(1), len(classes))}
    comparison = {f"{ckpt['model_name']} (trained pooling)": results["accuracy"]}
    for how in POOLINGS:
        pred = np.array([pool(frame_probs[i][store.mask[i]], how, beta).argmax() for i in range(len(labels))])
        comparison[f"{how} pooling of its frame scores" + (f" (beta {beta:g})" if how == "softmax" else "")] = \
            classification_metrics(labels, pred, len(classes))["accuracy"]
    results["pooling_comparison"] = comparison
    if ckpt["model_name"] == "video-tsp":
        results["learned_beta"] = float(model.temporal.beta.detach())
    table = pd.DataFrame({"video_id": store.video_ids, "label": [classes[i] for i in labels],
                          "predicted": [classes[i] for i in logits.argmax(1)]})
    write_csv(table, out / "predictions.csv")
    plot_confusion(np.array(results["confusion_matrix"]), classes, out / "confusion_matrix.png",
                   f"{ckpt['model_name']} on {split} clips: accuracy {results['accuracy']:.1%}")
    return results
