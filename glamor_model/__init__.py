"""GLAMOR-Net and its baselines in PyTorch, trained and evaluated on `ncaer build` outputs.

models (registry and architectures) -> data (datasets, stores, batches) -> engine
(the training loop) -> eval (figures, ablation) -> serve (predict, export, embed).
`pooling` and `data.preprocess` need no torch, so ONNX inference works without it.

`from glamor_model import create_model` (and the other registry functions) still works:
they come from `glamor_model.models`, imported on first use so that `import glamor_model`
does not import torch.
"""

_MODELS_API = ("check_model_options", "create_model", "describe", "is_video_model", "list_models", "model_family",
               "model_options", "register_model")
__all__ = list(_MODELS_API)


def __getattr__(name):
    if name in _MODELS_API:
        from glamor_model import models

        return getattr(models, name)
    raise AttributeError(f"module 'glamor_model' has no attribute {name!r}")
