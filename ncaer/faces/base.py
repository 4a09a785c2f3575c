"""What the face detectors share: the interface, letterboxed batches, and boxes mapped back
to frame pixels with non-maximum suppression."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Letterbox:
    scale: float
    height: int  # network input size
    width: int


def letterbox_batch(frames: list[np.ndarray], det_size: int, fixed: tuple[int, int] | None, multiple: int = 32):
    """Resize frames (same size) so the long side is at most det_size, pad bottom-right.

    `fixed` (height, width) is the model's input size where the graph fixes it.
    Returns the float32 NHWC batch (0..255, RGB) and the geometry to map boxes back.
    """
    h, w = frames[0].shape[:2]
    if fixed:
        scale = min(fixed[0] / h, fixed[1] / w)
        in_h, in_w = fixed
    else:
        scale = min(1.0, det_size / max(h, w))
        in_h = int(np.ceil(round(h * scale) / multiple) * multiple)
        in_w = int(np.ceil(round(w * scale) / multiple) * multiple)
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    batch = np.zeros((len(frames), in_h, in_w, 3), dtype=np.float32)
    for i, frame in enumerate(frames):
        resized = frame if (rh, rw) == (h, w) else cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_LINEAR)
        batch[i, :rh, :rw] = resized
    return batch, Letterbox(scale, in_h, in_w)


def nms(dets: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on rows (x1, y1, x2, y2, score); returns kept rows."""
    if len(dets) == 0:
        return dets
    order = np.argsort(-dets[:, 4], kind="stable")
    dets = dets[order]
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    alive = np.ones(len(dets), dtype=bool)
    for i in range(len(dets)):
        if not alive[i]:
            continue
        keep.append(i)
        iw = np.maximum(0, np.minimum(x2[i], x2) - np.maximum(x1[i], x1))
        ih = np.maximum(0, np.minimum(y2[i], y2) - np.maximum(y1[i], y1))
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        alive &= iou < iou_threshold
    return dets[keep]


def finish_boxes(dets: np.ndarray, geometry: Letterbox, frame_shape: tuple[int, ...], iou: float) -> np.ndarray:
    """Map boxes back to frame pixels, clip to the frame, drop empty ones, suppress overlaps."""
    h, w = frame_shape[:2]
    dets = dets.astype(np.float32).copy()
    dets[:, :4] /= geometry.scale
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, w)
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, h)
    dets = dets[(dets[:, 2] - dets[:, 0] >= 1) & (dets[:, 3] - dets[:, 1] >= 1)]
    return nms(dets, iou)


class Detector:
    """Detects faces in a clip's frames; `detect` returns one (k, 5) array per frame."""

    name: str
    model_path: str
    provider: str

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError
