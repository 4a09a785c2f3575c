"""Models by name: `create_model("glamor", num_classes=7)`, `list_models()`.

A leaf: model files import `register_model` from here and register themselves;
`glamor_model.models` imports every model file, so importing it fills the registry.
"""

from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_FAMILIES: dict[str, str] = {}
_OPTIONS: dict[str, tuple[str, ...]] = {}
_REQUIRED: dict[str, dict[str, str]] = {}
FAMILIES = ("frame", "video", "face-image")


def register_model(name: str, description: str, family: str = "frame", options: tuple[str, ...] = (),
                   required: dict[str, str] | None = None):
    """`family` says what the model's two inputs are:
    frame: face crop (B, 3, S, S), S the run's face_size (96 unless the model's recipe says otherwise),
    and face-masked context (B, 3, 112, 112);
    video: clips of face crops (B, T, 3, S, S) and a frame mask (B, T);
    face-image: an image (B, C, S, S) and, for the training loss, its clean target image.
    `options` are the constructor arguments a user may set (`ncaer train --face-weights`, or
    `model_kwargs` in a config file). Options ending in `_weights` name files whose tensors end up
    in the checkpoint, so a trained model is rebuilt without them. `required` maps the options that
    training cannot do without to what they are (the model itself is built without them when a
    checkpoint is loaded)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")

    def wrap(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DESCRIPTIONS[name] = description
        _FAMILIES[name] = family
        _OPTIONS[name] = tuple(options)
        _REQUIRED[name] = dict(required or {})
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_family(name: str) -> str:
    if name not in _FAMILIES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _FAMILIES[name]


def is_video_model(name: str) -> bool:
    return model_family(name) == "video"


def model_options(name: str) -> tuple[str, ...]:
    model_family(name)  # unknown model -> KeyError
    return _OPTIONS[name]


def check_model_options(name: str, options: dict) -> None:
    """Refuse an unknown model (KeyError), options it does not take, naming the models that do, and a
    missing required option (ValueError)."""
    takes = model_options(name)
    for option, what in _REQUIRED[name].items():
        if not options.get(option):
            raise ValueError(f"{name} needs --{option.replace('_', '-')}: {what}")
    for option in options:
        if option not in takes:
            takers = [n for n in sorted(_OPTIONS) if option in _OPTIONS[n]]
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} is for {', '.join(takers)}, not {name}" if takers
                             else f"no model takes the option {option!r}")


def describe(name: str) -> str:
    return _DESCRIPTIONS[name]


def create_model(name: str, num_classes: int = 7, **kwargs) -> nn.Module:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    model.model_name = name
    return model
