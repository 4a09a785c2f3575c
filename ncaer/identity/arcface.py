"""ArcFace identity embeddings from a user-supplied insightface model pack, never downloaded.

The pipeline is insightface's own (FaceAnalysis, face_align.norm_crop, ArcFaceONNX):
the pack's SCRFD detector gives the face's five landmarks, a similarity transform
(least squares, as skimage's SimilarityTransform that insightface calls) aligns them to
ArcFace's 112x112 template, and the recognition network's output is L2-normalised.
The detector looks at the manifest's box with a margin of the box's own size on each
side, and the detection that overlaps the box most is taken.

Threshold: insightface publishes no operating point for its packs. On L2-normalised
embeddings, distance 1.0 is cosine similarity 0.5, the value its issue tracker gives
as "good enough" for pairs (deepinsight/insightface#168); clip means, like dlib's, are
grouped no looser than pairs. Not measured here: no ArcFace weights can be obtained
offline (docs/check-leakage.md).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ncaer.faces.runtime import DetectorError, make_session
from ncaer.faces.scrfd import SCRFD, insightface_root

from .embed import IdentityError

ARCFACE_THRESHOLD = 1.0
# insightface's arcface_dst: where norm_crop puts the eyes, nose tip and mouth corners in a 112x112 face
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float64)
LANDMARK_DET_SIZE = 320  # the detector's input long side for the face region
MIN_IOU = 0.3  # a detection overlapping the manifest's box less than this is another face
# the other models of a pack: detectors, landmark and attribute networks
NOT_RECOGNITION = ("det_", "scrfd", "1k3d68", "2d106det", "genderage")
ARCFACE_HELP = (
    "ArcFace weights come in insightface model packs, which this tool never downloads. Get a pack with a "
    "recognition model and an SCRFD detector (e.g. buffalo_l: w600k_r50.onnx and det_10g.onnx; insightface "
    "packs are licensed for non-commercial research only), unzip it to ~/.insightface/models/<pack>/ "
    "(or $INSIGHTFACE_HOME/models/<pack>/), then pass <pack>, the pack directory, or its recognition .onnx."
)


def find_arcface_models(model: str) -> tuple[str, str]:
    """The pack's recognition model and SCRFD detector: from an .onnx path, a pack directory or a pack name."""
    candidates = [Path(model).expanduser(), insightface_root() / model]
    for path in candidates:
        if not path.exists():
            continue
        folder = path.parent if path.is_file() else path
        models = sorted(folder.glob("*.onnx"))
        if path.is_file():
            recognition = path
        else:
            found = [p for p in models if not p.name.startswith(NOT_RECOGNITION)]
            if len(found) != 1:
                listed = ", ".join(p.name for p in found) or "none"
                raise IdentityError(f"{folder}: expected one recognition model, found {listed}; pass the ArcFace "
                                    ".onnx itself. " + ARCFACE_HELP)
            recognition = found[0]
        detectors = [p for p in models if p.name.startswith(("det_", "scrfd"))]
        if not detectors:
            raise IdentityError(f"{folder} holds no SCRFD detector (det_*.onnx), which ArcFace needs for the five "
                                "landmarks it aligns a face by. " + ARCFACE_HELP)
        return str(recognition), str(detectors[0])
    looked = ", ".join(str(c) for c in candidates)
    raise IdentityError(f"ArcFace model {model!r} not found (looked at {looked}). " + ARCFACE_HELP)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) taking src points closest to dst (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    a = dst_c.T @ src_c / len(src)
    d = np.array([1.0, 1.0 if np.linalg.det(a) >= 0 else -1.0])
    u, s, vt = np.linalg.svd(a)
    rotation = u @ np.diag(d) @ vt
    scale = (s @ d) / src_c.var(axis=0).sum()
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]])


def _input_normalisation(path: str) -> tuple[float, float]:
    """insightface's rule: graphs converted from MXNet normalise inside (Sub and Mul among the first nodes)."""
    import onnx

    names = [node.name for node in onnx.load(path, load_external_data=False).graph.node[:8]]
    inside = any(n.startswith(("Sub", "_minus")) for n in names) and any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if inside else (127.5, 127.5)


class ArcFaceEmbedder:
    """An insightface recognition model (ArcFace) on faces aligned by the pack's SCRFD landmarks."""

    threshold = ARCFACE_THRESHOLD

    def __init__(self, model: str, device: str = "auto"):
        recognition, detector = find_arcface_models(model)
        self.name = f"arcface-{Path(recognition).stem}"  # as embed.model_info names it
        try:
            self.session = make_session(recognition, device)
            self.detector = SCRFD(detector, device, LANDMARK_DET_SIZE, keypoints=True)
        except DetectorError as e:
            raise IdentityError(str(e)) from e
        inp = self.session.get_inputs()[0]
        if list(inp.shape[2:]) != [112, 112]:
            raise IdentityError(f"{recognition}: input {inp.shape}, not an ArcFace model (1, 3, 112, 112). "
                                + ARCFACE_HELP)
        self.input_name = inp.name
        self.mean, self.std = _input_normalisation(recognition)
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def warm_up(self) -> None:
        """Run both networks once, so that a GPU provider builds its engines (TensorRT: minutes) before the
        first face (embed.load_embedder calls it)."""
        self.detector.warm_up()
        self.session.run(None, {self.input_name: np.zeros((1, 3, 112, 112), np.float32)})

    def landmarks(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The five landmarks (5, 2) of the face in `box`, in image pixels."""
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        cx1, cy1 = max(0, x1 - w), max(0, y1 - h)
        cx2, cy2 = min(image.shape[1], x2 + w), min(image.shape[0], y2 + h)
        dets = self.detector.detect([np.ascontiguousarray(image[cy1:cy2, cx1:cx2])])[0]
        if len(dets):
            boxes = dets[:, :4] + [cx1, cy1, cx1, cy1]
            iw = np.clip(np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1), 0, None)
            ih = np.clip(np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1), 0, None)
            union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + w * h - iw * ih
            iou = iw * ih / np.maximum(union, 1e-9)
            best = int(np.argmax(iou))
            if iou[best] >= MIN_IOU:
                return dets[best, 5:15].reshape(5, 2) + [cx1, cy1]
        raise ValueError(f"the model pack's detector finds no landmarks for the face at {tuple(box)}")

    def embed(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The L2-normalised embedding of the face in `box` (x1, y1, x2, y2) of an RGB uint8 image."""
        matrix = similarity_transform(self.landmarks(image, box), ARCFACE_TEMPLATE)
        aligned = cv2.warpAffine(image, matrix, (112, 112), borderValue=0.0)
        # insightface aligns BGR and feeds RGB (swapRB): this image is RGB already
        blob = ((aligned.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        vector = self.session.run(None, {self.input_name: blob})[0][0].astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
