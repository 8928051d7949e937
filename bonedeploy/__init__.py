"""bonedeploy: train, export and benchmark bone-radiograph classifiers."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("bonedeploy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

CLASSES: tuple[str, ...] = ("Fractured", "Normal")
"""Seed class names; index = sorted folder name, as torchvision's ImageFolder."""

POSITIVE_CLASS = "Fractured"
"""Sensitivity/specificity and thresholds are reported for this class."""
