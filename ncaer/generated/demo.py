"""A small CAER-layout corpus made offline from face photos that ship with installed packages.

Each clip shows one or two real portraits moving over a generated scene. The
scene's palette depends on the class, so the context carries the label and a
model trained on the demo build can do better than chance. A junk file and a
damaged clip are included on purpose: the build reports them and goes on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncaer.dataset.layout import CAER_CLASSES

from .videos import Actor, face_photos, mirrored, render_clip, write_video

DEMO_SPLITS = {"train": 4, "validation": 1, "test": 2}  # clips per class


def _class_palette(label_id: int) -> np.ndarray:
    hue = label_id / len(CAER_CLASSES)
    return np.array([np.cos(2 * np.pi * (hue + k / 3)) * 90 + 128 for k in range(3)])


def make_demo_corpus(root: str | Path, n_frames: int = 60, size: tuple[int, int] = (712, 400), seed: int = 0,
                     clips_per_class: dict[str, int] | None = None) -> Path:
    """Write ROOT/{train,validation,test}/{Class}/NNNN.avi; returns ROOT."""
    root = Path(root)
    photos = face_photos()
    photos += [mirrored(p) for p in photos]
    rng = np.random.default_rng(seed)
    number = 0
    for split, n_clips in (clips_per_class or DEMO_SPLITS).items():
        for label_id, label in enumerate(CAER_CLASSES):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n_clips):
                number += 1
                # portraits small enough that the scene, not the photo, fills most of the frame
                x, y = float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.35, 0.6))
                actors = [Actor(photos[int(rng.integers(len(photos)))], float(rng.uniform(50, 80)), (x, y),
                                (x + float(rng.uniform(-0.08, 0.08)), y))]
                if rng.random() < 0.3:  # a smaller second person in the background
                    bx = 0.1 if x > 0.5 else 0.9
                    actors.append(Actor(photos[int(rng.integers(len(photos)))], float(rng.uniform(30, 40)),
                                        (bx, 0.3), (bx, 0.3)))
                frames, _ = render_clip(n_frames, size, tuple(actors), seed=int(rng.integers(1 << 31)),
                                        tint=_class_palette(label_id))
                last = write_video(folder / f"{number:04d}.avi", frames, fps=30.0, codec="mpeg4")
    # inputs a real corpus has: an OS junk file and a damaged clip
    (root / "train" / "Happy" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (last.parent / "damaged.avi").write_bytes(last.read_bytes()[:2000])
    return root
