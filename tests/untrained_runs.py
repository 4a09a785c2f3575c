"""Run directories with an untrained model, for tests of what reads a run (predict, export, evaluate) that
need no training: a checkpoint as `ncaer train` writes it, in a second."""

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from glamor_model.engine.checkpoint import CLIP_POOLING
from glamor_model.engine.config import TrainConfig
from glamor_model.models import create_model, model_family


def write_run(folder, model: str, data, classes: list[str], **options) -> Path:
    """`folder`/best.pt for `model` trained (not) on `data` with these TrainConfig options. The last
    linear layer is scaled up so the class probabilities are far from uniform and depend on the input:
    an input prepared differently shows in them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(data=str(data), out=str(folder), model=model, **options)
    kwargs = {"in_channels": 1 if config.grayscale else 3} if model_family(model) == "face-image" else {}
    torch.manual_seed(0)
    net = create_model(model, num_classes=len(classes), **kwargs)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(100)
    torch.save({"model_name": model, "classes": classes, "prep": asdict(config.prep), "data_identity": "",
                "normalize": config.normalize, "model_kwargs": kwargs, "config": config.to_dict(),
                "model": net.state_dict(), "epoch": 0, "best": {"val_acc": 0.0, "epoch": 0},
                **({"clip_pooling": CLIP_POOLING} if model_family(model) == "video" else {})}, folder / "best.pt")
    return folder
