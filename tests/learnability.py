"""Generated datasets where only the context, or only the face, carries the label.

Written in the NCAER-S release layout (images/ + crop/*.txt) so the training code
reads them like any dataset. Three classes; each frame has a face-sized patch at a
random place whose box is in crop/.
"""

from pathlib import Path

import cv2
import numpy as np

CLASSES = ["a", "b", "c"]
H, W = 128, 171


def _pattern(kind: int, rng, h, w) -> np.ndarray:
    """Class-like textures: horizontal stripes, vertical stripes, checkerboard."""
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(6, 12))
    phase = int(rng.integers(period))
    if kind == 0:
        on = ((yy + phase) // (period // 2)) % 2
    elif kind == 1:
        on = ((xx + phase) // (period // 2)) % 2
    else:
        on = (((yy + phase) // period) + ((xx + phase) // period)) % 2
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return np.where(on[..., None] == 1, c0, c1).astype(np.uint8)


def make_dataset(root, carrier: str, per_class: dict[str, int], seed: int = 0) -> Path:
    """carrier "context": the background pattern is the class, the face is noise; "face": the reverse."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label_id, label in enumerate(CLASSES):
            (root / "images" / split / label).mkdir(parents=True, exist_ok=True)
            (root / "crop" / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                background = label_id if carrier == "context" else int(rng.integers(3))
                img = _pattern(background, rng, H, W)
                size = int(rng.integers(36, 48))
                x, y = int(rng.integers(0, W - size)), int(rng.integers(0, H - size))
                if carrier == "face":
                    face = _pattern(label_id, rng, size, size)
                else:
                    face = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                img[y : y + size, x : x + size] = face
                cv2.imwrite(str(root / "images" / split / label / f"{i:04d}.png"), img)
                (root / "crop" / split / label / f"{i:04d}.txt").write_text(f"{x},{y},{x + size},{y + size}\n")
    return root
