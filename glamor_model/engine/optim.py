"""The optimizer and the learning-rate schedule a run's recipe names (engine.recipes): SGD (with
momentum, Nesterov or not), Adam, or Adam's AMSGrad variant (`amsgrad`, FERAtt's reference); lr x gamma
at each milestone epoch, the drops stopping at min_lr."""

from __future__ import annotations

import torch

from .config import TrainConfig


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The drops stop at min_lr; an lr set below min_lr is used as it is."""
    drops = sum(epoch >= m for m in config.milestones)
    return max(config.gamma**drops, min(1.0, config.min_lr / config.lr))


def create_optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Fused kernels on CUDA (one launch for all parameters); PyTorch's default (foreach) elsewhere."""
    fused = True if device.type == "cuda" else None
    if config.optimizer in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused,
                                amsgrad=config.optimizer == "amsgrad")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay, fused=fused)
    raise ValueError(f"optimizer must be sgd, adam or amsgrad, not {config.optimizer!r}")


def create_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Stepped once per epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))
