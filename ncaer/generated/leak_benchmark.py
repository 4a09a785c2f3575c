"""A labelled leakage benchmark: an image-folder dataset whose test frames are, or are not,
near-twins of training frames, as a re-release would make them."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .videos import Actor, face_photos, render_clip


def perturb(rgb: np.ndarray, rng: np.random.Generator, quality: int = 75) -> np.ndarray:
    """What a re-release does to a frame: a small shift or rescale, then JPEG re-encoding."""
    h, w = rgb.shape[:2]
    if rng.random() < 0.5:
        dx, dy = rng.integers(2, 7, 2) * rng.choice([-1, 1], 2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
    else:
        s = rng.uniform(0.95, 1.05)
        m = np.float32([[s, 0, (1 - s) * w / 2], [0, s, (1 - s) * h / 2]])
    out = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def leak_benchmark(root: str | os.PathLike, n_scenes: int = 12, clips_per_scene: int = 4, seen_per_scene: int = 2,
                   unseen_scenes: int = 4, max_gap: int = 30, size: tuple[int, int] = (712, 400),
                   seed: int = 0) -> dict[str, bool]:
    """An image-folder dataset ROOT/{train,test}/scene/*.jpg with known leaks.

    Each scene is a fixed background with clips of 90 frames (30 fps) in which
    portraits move slowly. Frames of the first `seen_per_scene` clips of a scene go
    to train; test gets, for each of those clips, frames up to `max_gap` frames
    (1 s) away from a training frame, shifted or rescaled and re-encoded at JPEG
    quality 75 (positives), and frames of the scene's other clips and of scenes
    never seen in training, perturbed the same way (negatives). Returns
    {test image path relative to ROOT: is a leak}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = face_photos()
    truth = {}
    for scene in range(n_scenes + unseen_scenes):
        scene_seed = int(rng.integers(1 << 30))
        seen_scene = scene < n_scenes
        for clip in range(clips_per_scene):
            actors = []
            for _ in range(int(rng.integers(1, 3))):
                start = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.35, 0.6)))
                end = (start[0] + float(rng.uniform(-0.1, 0.1)), start[1] + float(rng.uniform(-0.03, 0.03)))
                actors.append(Actor(photos[int(rng.integers(len(photos)))], float(rng.uniform(50, 140)), start, end))
            seen = seen_scene and clip < seen_per_scene
            train_idx = sorted(int(i) for i in rng.choice(90, 3, replace=False)) if seen else []
            if seen:
                test_idx = [int(np.clip(i + rng.integers(-max_gap, max_gap + 1), 0, 89)) for i in train_idx[:2]]
            else:
                test_idx = [int(i) for i in rng.choice(90, 2, replace=False)]
            wanted = sorted(set(train_idx + test_idx))
            frames, _ = render_clip(90, size, tuple(actors), seed=scene_seed, stamp=False, indices=wanted)
            by_index = dict(zip(wanted, frames))
            name = f"scene{scene:02d}"
            for split, idx in (("train", train_idx), ("test", test_idx)):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                for k, i in enumerate(idx):
                    rel = f"{split}/{name}/clip{clip}_{i:02d}_{k}.jpg"
                    bgr = cv2.cvtColor(by_index[i], cv2.COLOR_RGB2BGR)
                    if split == "test":
                        bgr = perturb(bgr, rng)
                        truth[rel] = seen
                    cv2.imwrite(str(root / rel), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return truth
