"""Models by name: `create_model("glamor", num_classes=7)`, `list_models()`."""

from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_VIDEO: set[str] = set()


def register_model(name: str, description: str, video: bool = False):
    """`video`: the model takes clips (B, T, 3, S, S) of face crops and a frame mask (B, T)."""

    def wrap(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DESCRIPTIONS[name] = description
        if video:
            _VIDEO.add(name)
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    _load()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_video_model(name: str) -> bool:
    _load()
    return name in _VIDEO


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
    from . import glamor, video  # noqa: F401
