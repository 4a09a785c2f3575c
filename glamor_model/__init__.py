"""GLAMOR-Net and its baselines in PyTorch, trained and evaluated on `ncaer build` outputs.

The registry (and torch) is imported on first use, so torch-free parts such as
`glamor_model.preprocess` and ONNX inference in `glamor_model.predict` work without it.
"""

_REGISTRY = ("check_model_options", "create_model", "describe", "is_video_model", "list_models", "model_family",
             "model_options", "register_model")
__all__ = list(_REGISTRY)


def __getattr__(name):
    if name in _REGISTRY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'glamor_model' has no attribute {name!r}")
