"""Generated datasets where only the context, or only the face, carries the label, and one
where the face says which part of the context does (`make_keyed_dataset`).

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
    """Class-like textures: horizontal stripes, vertical stripes, checkerboard, with stripes and squares
    5-8 px wide (still 2.5-4 px at the tests' half-size context) in a dark and a bright colour, so every
    sample shows its class; which colour is which, the scale and the phase vary."""
    yy, xx = np.mgrid[0:h, 0:w]
    half = int(rng.integers(5, 9))
    phase = int(rng.integers(2 * half))
    if kind == 0:
        on = ((yy + phase) // half) % 2
    elif kind == 1:
        on = ((xx + phase) // half) % 2
    else:
        on = (((yy + phase) // half) + ((xx + phase) // half)) % 2
    dark, bright = rng.integers(0, 96, 3), rng.integers(160, 256, 3)
    c0, c1 = (dark, bright) if rng.random() < 0.5 else (bright, dark)
    return np.where(on[..., None] == 1, c0, c1).astype(np.uint8)


def make_dataset(root, carrier: str, per_class: dict[str, int], seed: int = 0) -> Path:
    """carrier "context": the background texture is the class, the face is noise; "face": the reverse, so a
    face left visible in the context image would give the label away (the masking test)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label_id, label in enumerate(CLASSES):
            (root / "images" / split / label).mkdir(parents=True, exist_ok=True)
            (root / "crop" / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if carrier == "context":
                    img = _pattern(label_id, rng, H, W)
                else:
                    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
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


KEY_COLOURS = ((230, 40, 40), (40, 200, 40), (40, 60, 230))  # RGB: red, green, blue
# top rows of the two bands of make_keyed_dataset, 32 px high. In the tests' 64x86 context (half size) they are rows
# 4-20 and 36-52: the 56-px evaluation crop (rows 4-60) puts them on the first and last row of the 3x3 context map
# (training crops move them by 4 px at most); the map's middle row is plain background.
BAND_ROWS = (8, 72)


def make_keyed_dataset(root, per_class: dict[str, int], seed: int = 0) -> Path:
    """Only the face says where in the context the label is: a test of GLAMOR-Net's Global-Local Attention.

    Two bands cross the whole frame (so no crop cuts them off), each a class texture in grey broken every 40 px by
    a 20-px block of its key colour (red, green or blue; the two bands' keys differ, their order is random). The
    face, under the bands, is a patch of one of the two keys. The label is the texture of the band whose key is the
    face's; the other band shows one of the two other classes. So the face alone says nothing of the label (its
    key is drawn apart from it), and the context alone narrows it to the two textures it shows (chance 1/2; with
    every pair of textures equally often in each class). A model has to match the face's key to a band's key and
    read that band's texture. GLA does this by construction: the face vector and each context position's
    features decide that position's weight. Average pooling (no attention, or uniform weights) keeps no "where":
    it must learn features that each bind one key to one texture, which it does far more slowly.

    Writes `bands.csv` (image, key, target: "top" or "bottom", the band the face points to) next to images/.
    """
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in per_class.items():
        for label_id, label in enumerate(CLASSES):
            (root / "images" / split / label).mkdir(parents=True, exist_ok=True)
            (root / "crop" / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(100, 156, (H, W, 3)).astype(np.uint8)
                keys = rng.choice(len(KEY_COLOURS), 2, replace=False)  # top band's key, bottom band's key
                target = int(rng.integers(2))
                other = int(rng.choice([c for c in range(len(CLASSES)) if c != label_id]))
                for band, (y0, key) in enumerate(zip(BAND_ROWS, keys)):
                    texture = _pattern(label_id if band == target else other, rng, 32, W).mean(2, keepdims=True)
                    block = np.clip(np.array(KEY_COLOURS[key]) + rng.integers(-20, 21, 3), 0, 255)
                    strip = np.repeat(texture, 3, 2)
                    for x0 in range(-int(rng.integers(40)), W, 40):
                        strip[:, max(x0, 0) : max(x0 + 20, 0)] = block
                    img[y0 : y0 + 32] = strip.astype(np.uint8)
                size = int(rng.integers(20, 25))
                x, y = int(rng.integers(0, W - size)), int(rng.integers(BAND_ROWS[1] + 32, H - size + 1))
                face = (np.array(KEY_COLOURS[keys[target]]) + rng.integers(-20, 21, 3)
                        + rng.integers(-40, 41, (size, size, 3)))
                img[y : y + size, x : x + size] = np.clip(face, 0, 255).astype(np.uint8)
                name = f"{split}/{label}/{i:04d}"
                cv2.imwrite(str(root / "images" / f"{name}.png"), img[:, :, ::-1])  # RGB -> BGR
                (root / "crop" / f"{name}.txt").write_text(f"{x},{y},{x + size},{y + size}\n")
                rows.append({"image": f"{name}.png", "key": int(keys[target]), "target": ("top", "bottom")[target]})
    pd.DataFrame(rows).to_csv(root / "bands.csv", index=False)
    return root


def make_clip_dataset(root, per_class: dict[str, int], frames: int = 8, expressive: int = 1, seed: int = 0,
                      filler: str = "noise") -> Path:
    """An `ncaer build`-like dataset of clips where only `expressive` frames per clip show the class.

    The other frames carry no label signal: random pixels (`filler="noise"`), or the
    texture of class "a" (`filler="neutral"`, like neutral faces in clips of any emotion:
    then "a" clips show it in every frame).
    """
    import pandas as pd

    from ncaer.dataset.manifest import to_frame, write_manifest

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    size, box = 48, (8, 8, 40, 40)
    for split, n in per_class.items():
        for label_id, label in enumerate(CLASSES):
            (root / "images" / split / label).mkdir(parents=True, exist_ok=True)
            for clip in range(n):
                shown = set(rng.choice(frames, expressive, replace=False).tolist())
                video_id = f"{split}/{label}/{clip:04d}"
                for seg in range(frames):
                    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    if seg in shown:
                        img[8:40, 8:40] = _pattern(label_id, rng, 32, 32)
                    elif filler == "neutral":
                        img[8:40, 8:40] = _pattern(0, rng, 32, 32)
                    rel = f"images/{video_id}_{seg}.png"
                    cv2.imwrite(str(root / rel), img)
                    rows.append({"sample_id": f"{video_id}_{seg}", "split": split, "label": label,
                                 "label_id": label_id, "video_id": video_id, "group": video_id,
                                 "source_path": f"{video_id}.avi", "source_fingerprint": "", "segment": seg,
                                 "n_segments": frames, "frame_index": seg, "timestamp_s": seg / 30, "n_frames": frames,
                                 "fps": 30.0, "width": size, "height": size, "face_x1": box[0], "face_y1": box[1],
                                 "face_x2": box[2], "face_y2": box[3], "face_score": 0.9, "n_faces": 1,
                                 "has_face": True, "detector": "generated", "decoder": "", "image_path": rel,
                                 "crop_path": "", "face_path": "", "context_path": ""})
    write_manifest(to_frame(rows), root)
    pd.Series({"corpus": {"classes": CLASSES}}).to_json(root / "build.json")
    return root


def make_face_build(root, per_class: dict[str, int], seed: int = 0) -> Path:
    """An `ncaer build`-like dataset whose face crops show the class texture and whose context images
    are clutter (other textures and noise), as input for `ncaer synth`."""
    from ncaer.dataset.manifest import to_frame, write_manifest

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in per_class.items():
        for label_id, label in enumerate(CLASSES):
            for sub in ("faces", "context"):
                (root / sub / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sid = f"{split}/{label}/{i:04d}_0"
                face = _pattern(label_id, rng, 40, 40)
                clutter = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                for _ in range(4):
                    y, x = rng.integers(0, 48, 2)
                    clutter[y : y + 16, x : x + 16] = _pattern(int(rng.integers(3)), rng, 16, 16)
                cv2.imwrite(str(root / f"faces/{sid}.png"), face)
                cv2.imwrite(str(root / f"context/{sid}.png"), clutter)
                rows.append({"sample_id": sid, "split": split, "label": label, "label_id": label_id,
                             "video_id": sid, "group": sid, "source_path": f"{sid}.avi", "source_fingerprint": "",
                             "segment": 0, "n_segments": 1, "frame_index": 0, "timestamp_s": 0.0, "n_frames": 1,
                             "fps": 30.0, "width": 64, "height": 64, "face_x1": 12, "face_y1": 12, "face_x2": 52,
                             "face_y2": 52, "face_score": 0.9, "n_faces": 1, "has_face": True,
                             "detector": "generated", "decoder": "", "image_path": f"context/{sid}.png",
                             "crop_path": "", "face_path": f"faces/{sid}.png", "context_path": f"context/{sid}.png"})
    write_manifest(to_frame(rows), root)
    return root
