"""Model inputs from a frame and a face box, as the reference code makes them (no torch needed).

The face is cut at the raw box and resized to face_size x face_size (aspect not
kept; zeros when there is no face); the context is the whole frame with the face
box set to 0 at full resolution (unless context_face is "visible"), resized to
context_height x context_width. `model_inputs` then takes the evaluation crop and
scales to float32 NCHW, for onnxruntime or torch alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    face_size: int = 96
    context_height: int = 128
    context_width: int = 171
    crop: int = 112
    context_face: str = "masked"  # masked | visible

    def __post_init__(self):
        if self.context_face not in ("masked", "visible"):
            raise ValueError("context_face must be masked or visible")
        if self.crop > min(self.context_height, self.context_width):
            raise ValueError("crop must fit in the resized context")

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
        face_img = cv2.resize(face, (prep.face_size, prep.face_size), interpolation=cv2.INTER_LINEAR)
    context = rgb
    if box is not None and prep.context_face == "masked":
        context = rgb.copy()
        context[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 0
    context = cv2.resize(context, (prep.context_width, prep.context_height), interpolation=cv2.INTER_AREA)
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
