"""Model families and their registry: `create_model(name, num_classes=7, **kw)`, `list_models()`."""
from . import distance, hybrid, image, keypoints, landmark, resnet  # noqa: F401  (register the families)
from .registry import FerModel, count_parameters, create_model, list_models, register_model

__all__ = ["FerModel", "count_parameters", "create_model", "list_models", "register_model"]
