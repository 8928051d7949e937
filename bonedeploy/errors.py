"""Typed errors. The CLI prints ``str(error)`` on one line and exits with ``exit_code``."""

from __future__ import annotations

from pathlib import Path


class BonedeployError(Exception):
    """Base class: a user-facing problem, not a bug."""

    exit_code = 1


class ConfigError(BonedeployError, ValueError):
    """An option or config value is invalid; the message lists the valid choices."""


class DataError(BonedeployError):
    """A dataset folder is unusable (missing, empty, single class, too small)."""


class ImageReadError(BonedeployError):
    """One file could not be decoded into an image."""

    def __init__(self, path: str | Path, cause: str):
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class CheckpointError(BonedeployError):
    """A file is not a usable bonedeploy checkpoint."""


class ArtefactError(BonedeployError):
    """An exported artefact (ONNX, engine, sidecar) is missing, corrupt or inconsistent."""


class IncompatibleEngineError(ArtefactError):
    """A TensorRT engine was built for another TensorRT version or GPU."""


class BackendUnavailableError(BonedeployError):
    """The runtime a backend needs is not installed or has no device here."""


class GateFailedError(BonedeployError):
    """A parity/accuracy gate failed; the artefacts are kept and named."""

    exit_code = 2
