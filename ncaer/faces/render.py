"""Face boxes in pixels, face crops, face-masked context images, and their JPEG bytes."""

from __future__ import annotations

import math

import cv2
import numpy as np

MASK_MODES = ("box", "ellipse", "blur")
# --mask blur shrinks the face to BLUR_PIXELS x BLUR_PIXELS, whatever its size, then scales
# it back up: eyes and mouth merge into a few blobs. A blur scaled to the face (1/12 of
# it, as before) left a 600 px face 50 px across, enough to read its expression.
BLUR_PIXELS = 6


def pixel_box(det: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer box (x2, y2 exclusive) covering the detection, clipped to the frame."""
    x1 = max(0, math.floor(float(det[0])))
    y1 = max(0, math.floor(float(det[1])))
    x2 = min(width, math.ceil(float(det[2])))
    y2 = min(height, math.ceil(float(det[3])))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def expand_box(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow a box by `margin` times its width/height on each side, clipped to the frame."""
    if margin <= 0:
        return box
    x1, y1, x2, y2 = box
    dx, dy = round((x2 - x1) * margin), round((y2 - y1) * margin)
    return max(0, x1 - dx), max(0, y1 - dy), min(width, x2 + dx), min(height, y2 + dy)


def face_crop(frame: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.0) -> np.ndarray:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = expand_box(box, margin, w, h)
    return frame[y1:y2, x1:x2]


def mask_face(frame: np.ndarray, box: tuple[int, int, int, int] | None, mode: str = "box") -> np.ndarray:
    """The context image: the frame with the face hidden (a copy; unmasked if no face)."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask must be one of {MASK_MODES}, not {mode!r}")
    out = frame.copy()
    if box is None:
        return out
    x1, y1, x2, y2 = box
    if mode == "box":
        out[y1:y2, x1:x2] = 0
    elif mode == "ellipse":
        # drawn in a box-sized canvas so no pixel outside the box is touched
        mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
        cv2.ellipse(mask, (((x2 - x1 - 1) / 2, (y2 - y1 - 1) / 2), (x2 - x1, y2 - y1), 0), 255, -1)
        out[y1:y2, x1:x2][mask > 0] = 0
    else:
        region = out[y1:y2, x1:x2]
        small = cv2.resize(region, (min(BLUR_PIXELS, x2 - x1), min(BLUR_PIXELS, y2 - y1)),
                           interpolation=cv2.INTER_AREA)
        out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return out


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
