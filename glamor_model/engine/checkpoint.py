"""Checkpoints: written atomically, and read back as a model with the metadata it was trained with."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from glamor_model.models import create_model, list_models, model_family
from glamor_model.models.glamor import LEGACY_KWARGS
from ncaer.atomic import replace_with


def save_atomic(obj, path: Path) -> None:
    """Written beside `path`, synced, then renamed: a crash leaves the old file or the new one, whole."""
    replace_with(path, lambda tmp: torch.save(obj, tmp))


# written into a clip model's checkpoints since the clip models pool frame logits; those saved before pooled
# frame probabilities, and video-mean/video-max ones fit today's models tensor for tensor
CLIP_POOLING = "frame-logits"


def refuse_old_clip_model(ckpt: dict, path) -> None:
    """A clip model saved when they pooled frame probabilities: its weights mean something else now."""
    name = ckpt["model_name"]
    if model_family(name) == "video" and ckpt.get("clip_pooling") != CLIP_POOLING:
        raise ValueError(f"{path} is a {name} trained when the clip models pooled frame probabilities; they now "
                         "pool frame logits as the reference code does (docs/fidelity.md): train it again")


def load_model_state(model, state: dict, path) -> None:
    """`model.load_state_dict`, with a message for a checkpoint of a model whose structure changed since."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit today's {model.model_name} (docs/fidelity.md lists what changed): "
                         f"train it again. {str(e).splitlines()[0]}") from e


def load_run(run: str | Path, checkpoint: str = "best", device="cpu"):
    """The model of a run directory and the checkpoint's metadata."""
    run = Path(run)
    path = run / f"{checkpoint}.pt" if checkpoint in ("best", "last") else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a directory written by `ncaer train`?")
    try:  # tensors and plain values only: unpickling anything else can run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))  # what torch would have had to import
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(f"{path} refused: it holds more than tensors and plain values{what}, and unpickling that "
                         "can run code; `ncaer train` writes no such checkpoint") from e
    except (RuntimeError, EOFError) as e:  # torch.load's errors for a truncated or foreign file
        raise ValueError(f"{path} cannot be read as a checkpoint: {str(e).splitlines()[0]}") from e
    # pretrained-weight files were read at training time; their values are in the checkpoint
    kwargs = {k: v for k, v in ckpt.get("model_kwargs", {}).items() if not k.endswith("_weights")}
    name = ckpt["model_name"]
    if name not in list_models():
        raise ValueError(f"{path} holds a {name}, a model this ncaer no longer has (docs/models.md says what "
                         "replaced it)")
    refuse_old_clip_model(ckpt, path)
    if "recipe" not in ckpt.get("config", {}):  # saved before the recipes
        kwargs.update(LEGACY_KWARGS.get(name, {}))  # GLAMOR-Net before its Keras numerics: built as then
    model = create_model(name, num_classes=len(ckpt["classes"]), **kwargs)
    load_model_state(model, ckpt["model"], path)
    return model.to(device).eval(), ckpt
