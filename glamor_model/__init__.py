"""GLAMOR-Net and its baselines in PyTorch, trained and evaluated on `ncaer build` outputs."""

from .registry import create_model, describe, list_models, register_model

__all__ = ["create_model", "describe", "list_models", "register_model"]
