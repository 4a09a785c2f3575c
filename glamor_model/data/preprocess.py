"""Model inputs from a frame and a face box, as the reference code makes them (no torch needed).

GLAMOR-Net's reference (minhnhatvt/glamor-net data_utils.py, training_preprocess and
testing_preprocess): the face is cut at the raw box and resized to face_size x face_size
with `tf.image.resize` (bilinear, half-pixel centres, no antialias; aspect not kept;
zeros when there is no face). The context is the whole frame with the face box set to 0
at full resolution (unless context_face is "visible"), encoded as JPEG at quality 95
(`tf.image.encode_jpeg`'s default) and decoded again, then resized the same bilinear way
to context_height x context_width. `model_inputs` then takes the evaluation crop and
scales to float32 NCHW, for onnxruntime or torch alike.

Named deviations: `context_resize="area"` (OpenCV's INTER_AREA, which averages the pixels
a target pixel covers instead of sampling four) and `context_jpeg=0` (no re-encode).
Always: the resized images are rounded to uint8 for the array cache (the reference keeps
floats; at most half a grey level apart), and OpenCV's JPEG decoder uses libjpeg's
accurate integer DCT where TensorFlow's default is the fast one (a few grey levels).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTEXT_RESIZES = ("tf-bilinear", "area")


def _bilinear_axis(n_in: int, n_out: int):
    """Source rows (or columns) and weights of `tf.image.resize` bilinear along one axis: output i
    samples at (i + 0.5) * n_in / n_out - 0.5, between floor and ceil clamped into the image,
    with weight (position - floor) on the second."""
    at = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    below = np.floor(at)
    lower = np.clip(below, 0, n_in - 1).astype(np.intp)
    upper = np.clip(np.ceil(at), 0, n_in - 1).astype(np.intp)
    return lower, upper, (at - below).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`tf.image.resize(image, (height, width))` as TensorFlow 2 computes it (method bilinear,
    antialias False, half-pixel centres): float32 HxWxC, interpolated along x, then y."""
    image = image.astype(np.float32)
    y0, y1, fy = _bilinear_axis(image.shape[0], height)
    x0, x1, fx = _bilinear_axis(image.shape[1], width)
    fx = fx[None, :, None]
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx
    return top + (bottom - top) * fy[:, None, None]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The RGB image encoded as a JPEG at `quality` (4:2:0, as tf.image.encode_jpeg) and decoded again."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]


@dataclass(frozen=True)
class Preprocess:
    face_size: int = 96
    context_height: int = 128
    context_width: int = 171
    crop: int = 112
    context_face: str = "masked"  # masked | visible
    context_resize: str = "tf-bilinear"  # tf-bilinear (the reference) | area
    context_jpeg: int = 95  # JPEG quality of the masked frame's re-encode; 0: none

    def __post_init__(self):
        if self.context_face not in ("masked", "visible"):
            raise ValueError("context_face must be masked or visible")
        if self.context_resize not in CONTEXT_RESIZES:
            raise ValueError(f"context_resize must be one of {', '.join(CONTEXT_RESIZES)}, not {self.context_resize!r}")
        if not 0 <= self.context_jpeg <= 100:
            raise ValueError("context_jpeg must be a JPEG quality from 1 to 100, or 0 for no re-encode")
        if self.crop > min(self.context_height, self.context_width):
            raise ValueError("crop must fit in the resized context")

    @classmethod
    def from_saved(cls, saved: dict) -> Preprocess:
        """The settings a checkpoint records; one saved before the context options existed was trained on
        OpenCV's INTER_AREA resize without a JPEG re-encode."""
        return cls(**{"context_resize": "area", "context_jpeg": 0, **saved})

    @property
    def centre(self) -> tuple[int, int]:
        """Top-left of the evaluation crop (8, 29 for the reference sizes)."""
        return (self.context_height - self.crop) // 2, (self.context_width - self.crop) // 2


def preprocess(rgb: np.ndarray, box, prep: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(face uint8 face_size^2 x 3, context uint8 context_height x context_width x 3) from an RGB frame."""
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        face = rgb[max(y1, 0):y2, max(x1, 0):x2]
    else:
        face = None
    if face is None or face.size == 0:
        face_img = np.zeros((prep.face_size, prep.face_size, 3), np.uint8)
    else:
        face_img = _to_uint8(resize_bilinear(face, prep.face_size, prep.face_size))
    context = rgb
    if box is not None and prep.context_face == "masked":
        context = rgb.copy()
        context[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 0
    if prep.context_jpeg:
        context = jpeg_round_trip(context, prep.context_jpeg)
    if prep.context_resize == "area":
        context = cv2.resize(context, (prep.context_width, prep.context_height), interpolation=cv2.INTER_AREA)
    else:
        context = _to_uint8(resize_bilinear(context, prep.context_height, prep.context_width))
    return face_img, context


def face_image(rgb: np.ndarray, box, size: int, grayscale: bool) -> np.ndarray:
    """A face-image model's input (size x size x 1 or 3, uint8): the face cut at its box (the whole
    image without one) and resized with INTER_AREA, in gray when the model is."""
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        if x2 > x1 and y2 > y1:
            rgb = rgb[max(y1, 0):y2, max(x1, 0):x2]
    face = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)[..., None] if grayscale else face


def model_inputs(faces: np.ndarray, contexts: np.ndarray, prep: Preprocess, normalize: bool):
    """uint8 NHWC faces and resized contexts -> float32 NCHW (face, centre-cropped context)."""
    cy, cx = prep.centre
    contexts = contexts[:, cy : cy + prep.crop, cx : cx + prep.crop]
    out = []
    for x in (faces, contexts):
        x = x.astype(np.float32) / 255.0
        if normalize:
            x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        out.append(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return out[0], out[1]
