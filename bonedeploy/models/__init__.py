"""The seed's model zoo. Importing this package does not import torch; creating a model does."""

from bonedeploy.models._registry import (
    ModelEntry,
    SeedResult,
    TrainDefaults,
    create_model,
    get_model_entry,
    last_conv_layer,
    list_models,
    register_last_conv,
    register_model,
)

__all__ = [
    "ModelEntry",
    "SeedResult",
    "TrainDefaults",
    "create_model",
    "get_model_entry",
    "last_conv_layer",
    "list_models",
    "register_last_conv",
    "register_model",
]
