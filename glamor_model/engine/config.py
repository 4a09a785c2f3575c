"""A training run's options: `TrainConfig`, read from defaults, a YAML file and the command line."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from glamor_model.data.preprocess import Preprocess
from glamor_model.models.registry import check_model_options, model_family

from .recipes import LEGACY_RECIPE, recipe_values


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    model: str = "glamor"
    boxes: str | None = None  # box file for image-folder datasets
    recipe: str = "reference"  # engine.recipes: the value of every option below left at None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None  # sgd | adam | amsgrad (Adam's AMSGrad variant)
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    milestones: tuple[int, ...] | None = None
    gamma: float | None = None
    min_lr: float | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str | None = None  # auto (bf16 on CUDA) | off | bf16 | fp16
    channels_last: str = "auto"  # auto (on CUDA) | on | off
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead adds CUDA graphs
    normalize: bool | None = None  # ImageNet mean/std instead of plain [0, 1]
    augment_face: bool | None = None  # random flip and rotation of the face in training
    context_face: str = "masked"  # masked | visible
    context_resize: str | None = None  # tf-bilinear (GLAMOR-Net's reference) | area
    context_jpeg: int | None = None  # JPEG quality of the masked frame's re-encode; 0: none
    face_size: int | None = None  # face crop side; the recipe's: 96, caer-resnet18 160
    context_height: int = 128
    context_width: int = 171
    crop: int = 112
    val_split: str = "val"
    frames: int = 8  # video models: frames per clip
    image_size: int = 128  # face-image models (FERAtt, PreActResNet-18): input size
    grayscale: bool = False  # face-image models: one input channel
    fresh_composites: bool = False  # face-image models on an `ncaer synth` output: a new composite per draw
    cache_dir: str = ""  # default: ~/.cache/ncaer/arrays
    workers: int = 2  # processes that preprocess the images into the cache
    data_on_device: str = "auto"  # keep the uint8 arrays on the GPU when they fit
    loader_workers: int | None = None  # processes reading arrays kept on disk (None: 4 on CUDA, 0 on the CPU)
    log_every: int = 50  # steps between progress reports (each waits for the device)
    sync_bn: bool = False
    model_kwargs: dict = field(default_factory=dict)  # the model's options, e.g. face_weights for caer-resnet18

    # options that may change when a run is resumed; data and boxes may move (the training samples
    # themselves must stay the same: engine.loop compares their identity)
    RESUMABLE = ("recipe", "epochs", "device", "workers", "cache_dir", "data_on_device", "loader_workers", "log_every",
                 "compile", "compile_mode", "out", "data", "boxes")
    # recorded as absolute paths, so `ncaer evaluate --run RUN` finds them from any folder
    PATHS = ("data", "boxes", "cache_dir")

    def __post_init__(self):
        """Options left at None take the recipe's value."""
        for name, value in recipe_values(self.model, self.recipe).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "milestones", tuple(self.milestones))

    @property
    def prep(self) -> Preprocess:
        return Preprocess(self.face_size, self.context_height, self.context_width, self.crop, self.context_face,
                          self.context_resize, self.context_jpeg)

    def with_absolute_paths(self) -> TrainConfig:
        return replace(self, **{k: os.path.abspath(v) for k in self.PATHS if (v := getattr(self, k))})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    @classmethod
    def from_saved(cls, d: dict) -> TrainConfig:
        """A run's recorded config; one saved before the recipes existed gets what the engine then did
        for the options it did not record, not today's recipe."""
        return cls.from_dict(d if "recipe" in d else {**LEGACY, **d})


def load_config(path: str | Path | None, overrides: dict) -> TrainConfig:
    """Defaults <- YAML file <- explicit overrides (options given on the command line)."""
    values = {}
    if path:
        values = yaml.safe_load(Path(path).read_text()) or {}
        for f in fields(TrainConfig):  # YAML 1.1 reads 1e-2 (no dot) as a string
            if f.type.startswith("float") and isinstance(values.get(f.name), str):
                try:
                    values[f.name] = float(values[f.name])
                except ValueError:
                    raise ValueError(f"{path}: {f.name}: {values[f.name]!r} is not a number") from None
    model_kwargs = {**(values.get("model_kwargs") or {}), **(overrides.get("model_kwargs") or {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["model_kwargs"] = model_kwargs
    missing = [k for k in ("data", "out") if not values.get(k)]
    if missing:
        raise ValueError(f"--{' and --'.join(missing)} required (on the command line or in the --config file)")
    config = TrainConfig.from_dict(values)
    check_config(config)
    return config


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# a config saved before the recipes existed: the values the engine used then for what it did not record
LEGACY = dict(recipe=LEGACY_RECIPE, nesterov=False, augment_face=True, context_resize="area", context_jpeg=0)


def check_config(config: TrainConfig) -> None:
    """Refuse options that cannot take effect (ValueError, KeyError for an unknown model)."""
    check_model_options(config.model, config.model_kwargs)
    if config.normalize and model_family(config.model) == "face-image":
        raise ValueError(f"--normalize is not for {config.model}: the face-image models take images in [0, 1] as "
                         "their reference code feeds them; train it without --normalize")
    if config.fresh_composites and model_family(config.model) != "face-image":
        raise ValueError(f"--fresh-composites is for the face-image models (FERAtt, preactresnet18), "
                         f"not {config.model}")
    if config.compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, not {config.compile_mode!r}")
    if config.nesterov and (config.optimizer != "sgd" or config.momentum <= 0):
        raise ValueError("--nesterov needs --optimizer sgd with a --momentum above 0 (pass --no-nesterov)")
    if config.log_every < 1:
        raise ValueError("log_every must be at least 1")
    if config.loader_workers is not None and config.loader_workers < 0:
        raise ValueError("loader_workers must be 0 or more")
    if config.data_on_device not in ("auto", "on", "off"):
        raise ValueError(f"data_on_device must be auto, on or off, not {config.data_on_device!r}")
