"""Generated videos whose content is known: frame numbers and face boxes.

Used by the tests (frame exactness, detector recall), the benchmarks, the leakage
benchmark and the demo corpus. Every frame carries its own index as a barcode of black/white blocks in
the top-left corner, large enough to survive lossy codecs, so a written image can
be traced back to the exact decoded frame it came from. Faces are real photos that
ship inside installed packages (scikit-image, matplotlib), pasted at known places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

BITS = 12  # up to 4096 frames per clip
BLOCK = 16  # px per bit; survives MPEG-4 and JPEG at ordinary qualities
BARCODE_HEIGHT = 2 * BLOCK


def stamp_index(frame: np.ndarray, index: int) -> None:
    """Write `index` into the top-left corner: a row of bits and, below it, their complement."""
    for bit in range(BITS):
        on = (index >> bit) & 1
        x = bit * BLOCK
        frame[:BLOCK, x : x + BLOCK] = 255 if on else 0
        frame[BLOCK:BARCODE_HEIGHT, x : x + BLOCK] = 0 if on else 255


def read_index(frame: np.ndarray) -> int:
    """Read back the index written by `stamp_index`; raises if the barcode is not there."""
    gray = frame.mean(axis=2) if frame.ndim == 3 else frame.astype(np.float64)
    index = 0
    for bit in range(BITS):
        x = bit * BLOCK
        top = gray[2 : BLOCK - 2, x + 2 : x + BLOCK - 2].mean()
        bottom = gray[BLOCK + 2 : BARCODE_HEIGHT - 2, x + 2 : x + BLOCK - 2].mean()
        if abs(top - bottom) < 64:
            raise ValueError(f"no frame-index barcode (bit {bit}: {top:.0f} vs {bottom:.0f})")
        index |= int(top > bottom) << bit
    return index


@dataclass(frozen=True)
class FacePhoto:
    name: str
    image: np.ndarray  # RGB uint8
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the face in `image`, checked by eye


def face_photos() -> list[FacePhoto]:
    """Portraits that ship with installed packages, with hand-checked face boxes."""
    import matplotlib
    import skimage.data

    grace_path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    grace = cv2.cvtColor(cv2.imread(grace_path), cv2.COLOR_BGR2RGB)
    return [
        FacePhoto("astronaut", skimage.data.astronaut(), (180, 55, 272, 180)),
        FacePhoto("grace_hopper", grace, (172, 130, 358, 338)),
    ]


def mirrored(photo: FacePhoto) -> FacePhoto:
    """The portrait flipped left-right, with its face box moved accordingly."""
    x1, y1, x2, y2 = photo.box
    w = photo.image.shape[1]
    return FacePhoto(f"{photo.name}-mirrored", np.ascontiguousarray(photo.image[:, ::-1]), (w - x2, y1, w - x1, y2))


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A textured scene: colour gradient plus random rectangles and circles."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    mix = (xx / width * 0.6 + yy / height * 0.4)[..., None]
    img = (c0 * (1 - mix) + c1 * mix).astype(np.uint8)
    for _ in range(12):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            w, h = int(rng.integers(20, width // 3)), int(rng.integers(20, height // 3))
            cv2.rectangle(img, (x, y), (x + w, y + h), color, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(10, height // 5)), color, -1)
    return img


@dataclass(frozen=True)
class Actor:
    """A portrait moving linearly across the frame; `face_height` is in output pixels."""

    photo: FacePhoto
    face_height: float
    start: tuple[float, float]  # face centre at the first frame, as fractions of W, H
    end: tuple[float, float]  # face centre at the last frame


def _paste(frame: np.ndarray, actor: Actor, t: float) -> tuple[float, float, float, float] | None:
    """Paste the actor's portrait at time t in [0, 1]; return the face box, or None if off-frame."""
    h_img, w_img = frame.shape[:2]
    photo = actor.photo
    fx1, fy1, fx2, fy2 = photo.box
    scale = actor.face_height / (fy2 - fy1)
    ph, pw = photo.image.shape[:2]
    sw, sh = max(1, round(pw * scale)), max(1, round(ph * scale))
    scaled = cv2.resize(photo.image, (sw, sh), interpolation=cv2.INTER_AREA)
    cx = (actor.start[0] + (actor.end[0] - actor.start[0]) * t) * w_img
    cy = (actor.start[1] + (actor.end[1] - actor.start[1]) * t) * h_img
    # top-left of the scaled portrait so that the face centre lands on (cx, cy)
    ox = round(cx - (fx1 + fx2) / 2 * sw / pw)
    oy = round(cy - (fy1 + fy2) / 2 * sh / ph)
    x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + sw, w_img), min(oy + sh, h_img)
    if x2 <= x1 or y2 <= y1:
        return None
    frame[y1:y2, x1:x2] = scaled[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
    box = (ox + fx1 * sw / pw, oy + fy1 * sh / ph, ox + fx2 * sw / pw, oy + fy2 * sh / ph)
    return box


def render_clip(
    n_frames: int,
    size: tuple[int, int] = (712, 400),
    actors: tuple[Actor, ...] = (),
    seed: int = 0,
    stamp: bool = True,
    tint: np.ndarray | None = None,
    indices: list[int] | None = None,
) -> tuple[list[np.ndarray], list[list[tuple[float, float, float, float]]]]:
    """Render RGB frames and, per frame, the face boxes of the actors (in actor order).

    `tint` (an RGB colour) is blended into the scene behind the actors. `indices`
    renders only those frames of the n_frames-long clip.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    base = background(height, width, rng)
    if tint is not None:
        base = np.clip(base * 0.6 + np.asarray(tint) * 0.4, 0, 255).astype(np.uint8)
    frames, boxes = [], []
    for i in range(n_frames) if indices is None else indices:
        frame = base.copy()
        # a moving bar keeps consecutive frames different even without actors
        x = int((i * 7) % width)
        cv2.rectangle(frame, (x, height - 24), (x + 40, height - 4), (255, 255, 0), -1)
        t = i / max(n_frames - 1, 1)
        frame_boxes = []
        for actor in actors:
            box = _paste(frame, actor, t)
            if box is not None:
                frame_boxes.append(box)
        if stamp:
            stamp_index(frame, i)
        frames.append(frame)
        boxes.append(frame_boxes)
    return frames, boxes


# name -> (container format, codec, encoder options)
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    # MPEG-4 part 2 in AVI, as CAER ships
    "mpeg4": ("avi", "mpeg4", {"qscale": "3", "g": "12"}),
    # MPEG-4 part 2 with B-frames, to stress reordering in AVI
    "mpeg4-bframes": ("avi", "mpeg4", {"qscale": "3", "g": "12", "bf": "2"}),
    # H.264 with B-frames (decode order differs from presentation order)
    "h264": ("mp4", "libx264", {"preset": "veryfast", "bf": "3", "g": "30", "crf": "20"}),
    "mjpeg": ("avi", "mjpeg", {"q:v": "3"}),
}


def write_video(
    path: str | os.PathLike,
    frames: list[np.ndarray],
    fps: float = 30.0,
    codec: str = "mpeg4",
    timestamps: list[float] | None = None,
) -> Path:
    """Encode RGB frames with PyAV. `timestamps` (seconds) makes a variable-frame-rate file."""
    import av

    _, codec_name, options = CODECS[codec]
    path = Path(path)
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec_name, rate=rate, options=dict(options))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec_name == "mjpeg" else "yuv420p"
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if timestamps is not None:
                frame.pts = round(timestamps[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_clip(
    path: str | os.PathLike,
    n_frames: int = 90,
    size: tuple[int, int] = (712, 400),
    codec: str = "mpeg4",
    fps: float = 30.0,
    actors: tuple[Actor, ...] = (),
    seed: int = 0,
    timestamps: list[float] | None = None,
) -> list[list[tuple[float, float, float, float]]]:
    """Render and encode one clip; return the true face boxes per frame."""
    frames, boxes = render_clip(n_frames, size, actors, seed)
    write_video(path, frames, fps=fps, codec=codec, timestamps=timestamps)
    return boxes


def random_actor(rng: np.random.Generator, photos: list[FacePhoto], min_face: float, max_face: float) -> Actor:
    """An actor with a random portrait, face size and straight path kept inside the frame."""
    photo = photos[int(rng.integers(len(photos)))]
    return Actor(
        photo=photo,
        face_height=float(rng.uniform(min_face, max_face)),
        start=(float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.35, 0.6))),
        end=(float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.35, 0.6))),
    )
