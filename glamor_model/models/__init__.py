"""The models, by name (`create_model`, `list_models`), timm-style.

Importing this package imports every model file, and each registers its builders in
`registry`, a leaf that imports no model. Everything here needs torch.
"""

from . import feratt, glamor, video  # noqa: F401  (they register themselves)
from .registry import (
    FAMILIES,
    check_model_options,
    create_model,
    describe,
    is_video_model,
    list_models,
    model_family,
    model_options,
    register_model,
)

__all__ = ["FAMILIES", "check_model_options", "create_model", "describe", "is_video_model", "list_models",
           "model_family", "model_options", "register_model"]
