"""The identity model by name: dlib, or an insightface ArcFace pack."""

from __future__ import annotations

import functools
from pathlib import Path

from .arcface import ARCFACE_THRESHOLD, ArcFaceEmbedder, find_arcface_models
from .embed import DlibEmbedder


@functools.lru_cache(maxsize=2)
def load_embedder(model: str = "dlib", device: str = "auto"):
    """The identity model, loaded and warmed up once per process (build workers embed every clip they write;
    a GPU provider builds its engines here, not inside a clip's deadline)."""
    if model == "dlib":
        return DlibEmbedder()
    embedder = ArcFaceEmbedder(model, device)
    embedder.warm_up()
    return embedder


def model_info(model: str) -> tuple[str, float]:
    """The model's name and default threshold, without starting it on a device (the build's driver needs
    only these, and a clear error now when the model is missing)."""
    if model == "dlib":
        embedder = load_embedder(model)
        return embedder.name, embedder.threshold
    return f"arcface-{Path(find_arcface_models(model)[0]).stem}", ARCFACE_THRESHOLD
