"""The seed's model zoo. Importing this package does not import torch; creating a model does."""

from bonedeploy.models._registry import (
    ModelEntry,
    SeedResult,
    TrainDefaults,
    create_model,
    get_model_entry,
    list_models,
    register_model,
)

__all__ = [
    "ModelEntry",
    "SeedResult",
    "TrainDefaults",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
