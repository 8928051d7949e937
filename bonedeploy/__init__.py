"""bonedeploy: train, export and benchmark bone-radiograph classifiers."""

# The one version number: pyproject.toml reads it from here (setuptools `attr:`, parsed without
# importing). A literal, not importlib.metadata, which costs ~40 ms on every start of the CLI.
__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("Fractured", "Normal")
"""Seed class names; index = sorted folder name, as torchvision's ImageFolder."""

POSITIVE_CLASS = "Fractured"
"""Sensitivity/specificity and thresholds are reported for this class."""
