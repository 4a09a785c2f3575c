"""Models by name: `create_model("glamor", num_classes=7)`, `list_models()`."""

from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_FAMILIES: dict[str, str] = {}
FAMILIES = ("frame", "video", "face-image")


def register_model(name: str, description: str, family: str = "frame"):
    """`family` says what the model's two inputs are:
    frame: face crop (B, 3, 96, 96) and face-masked context (B, 3, 112, 112);
    video: clips of face crops (B, T, 3, S, S) and a frame mask (B, T);
    face-image: an image (B, C, S, S) and, for the training loss, its clean target image."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")

    def wrap(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DESCRIPTIONS[name] = description
        _FAMILIES[name] = family
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    _load()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_family(name: str) -> str:
    _load()
    if name not in _FAMILIES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _FAMILIES[name]


def is_video_model(name: str) -> bool:
    return model_family(name) == "video"


def describe(name: str) -> str:
    _load()
    return _DESCRIPTIONS[name]


def create_model(name: str, num_classes: int = 7, **kwargs) -> nn.Module:
    _load()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    model.model_name = name
    return model


def _load():
    # model files register themselves on import
    from . import feratt, glamor, video  # noqa: F401
