"""What the face detectors share: the interface, letterboxed batches, and boxes mapped back
to frame pixels with non-maximum suppression."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from .runtime import CPU, TRT, trt_cache_dir


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
    """Map boxes (and landmarks after the score) back to frame pixels, clip boxes to the frame, drop empty
    ones, suppress overlaps."""
    h, w = frame_shape[:2]
    dets = dets.astype(np.float32).copy()
    dets[:, :4] /= geometry.scale
    dets[:, 5:] /= geometry.scale  # landmarks, where the detector gives them
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, w)
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, h)
    dets = dets[(dets[:, 2] - dets[:, 0] >= 1) & (dets[:, 3] - dets[:, 1] >= 1)]
    return nms(dets, iou)


# Frames per inference call on a GPU: every call has this batch size (the last one padded), so the session
# sees one input shape, TensorRT builds one engine, and a frame's boxes do not depend on what it shared a batch with.
GPU_BATCH = 64


class Detector:
    """Detects faces in a clip's frames; `detect` returns one (k, 5) array per frame.

    On the CPU the input is the frames' letterboxed size (long side det_size, rounded up to a multiple of
    32) and a call takes any number of frames. On a GPU it is one fixed square, det_size x det_size, in
    batches of GPU_BATCH frames, whatever the clips' sizes."""

    name: str
    model_path: str
    provider: str
    session = None
    input_name: str
    det_size: int
    graph_input: tuple[int, int] | None = None  # (height, width) where the model's graph fixes them
    batched = True  # False: the graph takes one frame per run

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    @property
    def on_gpu(self) -> bool:
        return self.provider != CPU

    def input_shape(self) -> tuple[int, int] | None:
        """The fixed (height, width) to letterbox into, or None for the frames' own shape."""
        if self.graph_input or not self.on_gpu:
            return self.graph_input
        side = int(np.ceil(self.det_size / 32) * 32)
        return side, side

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """session.run on an NCHW batch; on a GPU in fixed batches of GPU_BATCH (zero-padded)."""
        if not self.on_gpu or not self.batched:
            return self.session.run(None, {self.input_name: blob})
        parts = []
        for start in range(0, len(blob), GPU_BATCH):
            chunk = blob[start:start + GPU_BATCH]
            n = len(chunk)
            if n < GPU_BATCH:
                chunk = np.concatenate([chunk, np.zeros((GPU_BATCH - n, *chunk.shape[1:]), chunk.dtype)])
            parts.append([out[:n] for out in self.session.run(None, {self.input_name: chunk})])
        return [np.concatenate(outs) for outs in zip(*parts)]

    def warm_up(self) -> dict:
        """Detect on blank frames of the input shape, so that a TensorRT engine is built (or loaded from its
        cache) before work starts, for the very shape and batch the build then runs.

        Returns what the build report says about it: the seconds taken, and whether an engine was built."""
        if not self.on_gpu:
            return {}
        height, width = self.input_shape()
        cache = trt_cache_dir()
        before = set(cache.glob("*")) if cache.is_dir() else set()
        t = time.perf_counter()
        self.detect([np.zeros((height, width, 3), np.uint8)] * (GPU_BATCH if self.batched else 1))
        seconds = round(time.perf_counter() - t, 3)
        figures = {"warm_up_s": seconds, "input": [GPU_BATCH if self.batched else 1, 3, height, width]}
        if self.provider == TRT:
            built = bool(set(cache.glob("*")) - before)
            figures.update(tensorrt_engine="built" if built else "loaded from cache", tensorrt_cache=str(cache))
        return figures
