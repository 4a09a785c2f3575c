"""insightface SCRFD: usually more accurate than CenterFace, but its weights come in
insightface model packs, which are never downloaded here: the user points at a pack
directory or an .onnx file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Detector, Letterbox, finish_boxes, letterbox_batch
from .runtime import DetectorError, make_session


def insightface_root() -> Path:
    return Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")) / "models"


SCRFD_HELP = (
    "SCRFD weights come in insightface model packs, which this tool never downloads. "
    "Get a pack that contains an SCRFD detector (e.g. buffalo_l, with det_10g.onnx; insightface packs are "
    "licensed for non-commercial research only), unzip it to ~/.insightface/models/<pack>/ "
    "(or $INSIGHTFACE_HOME/models/<pack>/), then pass --detector-model <pack>, the pack directory, "
    "or the .onnx file itself."
)


def find_scrfd_model(model: str | None) -> str:
    """Resolve --detector-model for SCRFD: an .onnx path, a pack directory, or a pack name."""
    if not model:
        raise DetectorError("--detector scrfd needs --detector-model. " + SCRFD_HELP)
    candidates = [Path(model).expanduser(), insightface_root() / model]
    for path in candidates:
        if path.is_file():
            return str(path)
        if path.is_dir():
            found = sorted(path.glob("det_*.onnx")) + sorted(path.glob("scrfd*.onnx"))
            if found:
                return str(found[0])
            raise DetectorError(f"{path} holds no SCRFD detector (det_*.onnx or scrfd*.onnx). " + SCRFD_HELP)
    looked = ", ".join(str(c) for c in candidates)
    raise DetectorError(f"SCRFD model {model!r} not found (looked at {looked}). " + SCRFD_HELP)


class SCRFD(Detector):
    """insightface SCRFD: anchor-based, strides 8/16/32 (or 8..128), distance box regression."""

    name = "scrfd"

    def __init__(self, model: str | None, device: str = "auto", det_size: int = 640, threshold: float = 0.5,
                 nms_iou: float = 0.4, keypoints: bool = False):
        self.model_path = find_scrfd_model(model)
        self.session = make_session(self.model_path, device)
        self.provider = self.session.get_providers()[0]
        self.det_size, self.threshold, self.nms_iou = det_size, threshold, nms_iou
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2:4]
        self.graph_input = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        outputs = self.session.get_outputs()
        n_out = len(outputs)
        layouts = {6: (3, 2, False), 9: (3, 2, True), 10: (5, 1, False), 15: (5, 1, True)}
        if n_out not in layouts:
            raise DetectorError(f"{self.model_path}: {n_out} outputs; not an SCRFD graph (expected 6, 9, 10 or 15)")
        self.fmc, self.num_anchors, has_kps = layouts[n_out]
        if keypoints and not has_kps:
            raise DetectorError(f"{self.model_path}: this SCRFD graph has no landmark outputs")
        self.keypoints = keypoints  # rows then carry the five landmarks (x, y) after the score
        self.strides = [8, 16, 32, 64, 128][: self.fmc]
        # batched: the graph's batch is free and its outputs keep it (else one run per frame)
        self.batched = (isinstance(inp.shape[0], str) or inp.shape[0] is None) and len(outputs[0].shape) == 3

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        batch, geometry = letterbox_batch(frames, self.det_size, self.input_shape())
        blob = ((batch - 127.5) / 128.0).transpose(0, 3, 1, 2)
        if self.batched:
            results = self.run(blob)
            per_frame = [[r[b] for r in results] for b in range(len(frames))]
        else:  # graph fixes batch 1: one run per frame
            per_frame = [self.session.run(None, {self.input_name: blob[b : b + 1]}) for b in range(len(frames))]
            per_frame = [[r[0] if r.ndim == 3 else r for r in res] for res in per_frame]
        return [
            finish_boxes(self._decode(res, geometry), geometry, frames[b].shape, self.nms_iou)
            for b, res in enumerate(per_frame)
        ]

    def _decode(self, outputs: list[np.ndarray], geometry: Letterbox) -> np.ndarray:
        dets = []
        for k, stride in enumerate(self.strides):
            scores = outputs[k].reshape(-1)
            boxes = outputs[k + self.fmc].reshape(-1, 4) * stride
            gh, gw = geometry.height // stride, geometry.width // stride
            ys, xs = np.mgrid[0:gh, 0:gw]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            centres = np.repeat(centres, self.num_anchors, axis=0)
            if len(centres) != len(scores):
                raise DetectorError(f"{self.model_path}: output size does not match the input grid at stride {stride}")
            hit = scores >= self.threshold
            c, d = centres[hit], boxes[hit]
            found = np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3],
                              scores[hit]], axis=1)
            if self.keypoints:  # offsets from the anchor centre, in strides
                kps = outputs[k + 2 * self.fmc].reshape(-1, 10)[hit] * stride + np.tile(c, 5)
                found = np.concatenate([found, kps], axis=1)
            dets.append(found)
        return np.concatenate(dets) if dets else np.zeros((0, 15 if self.keypoints else 5), np.float32)
