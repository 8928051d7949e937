"""The backend protocol and registry.

Lifecycle after Polygraphy's runners (``activate``/``activate_impl``): the constructor only
checks and records the declared options (cheap, never fails on a missing runtime); ``load()``
does the bookkeeping (idempotent, ``loaded``) and calls the subclass's ``_load()``, which imports
the runtime and acquires the session/engine; ``close()`` releases it; a backend is a context
manager. The base demands no file: ``FileBackend`` checks that its file exists before opening it,
a remote backend reaches its server. Runtimes are imported only inside their own module.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.backends.options import Option, check_options
from bonedeploy.errors import ArtefactError, ConfigError

# Every caller may say how many images it will send per call (bench does, per batch size).
BATCH_SIZE = Option("batch_size", "the batch size the caller will send (a hint; torch's cuda_graph "
                    "captures for it)", type=int, minimum=1)


class Backend(abc.ABC):
    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    schemes: ClassVar[tuple[str, ...]] = ()  # URL schemes (grpc://...) for remote backends
    OPTIONS: ClassVar[tuple[Option, ...]] = (BATCH_SIZE,)  # each class adds its own

    def __init__(self, source: str | Path, **options: Any):
        self.source = source  # what it runs: a file, a server's URL
        self.options = check_options(self.name, self.declared_options(), options)
        self._card: ModelCard | None = None
        self.loaded = False

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        """The options this backend takes: its own first, then inherited ones it does not redeclare."""
        seen: dict[str, Option] = {}
        for klass in cls.__mro__:
            for opt in vars(klass).get("OPTIONS", ()):
                seen.setdefault(opt.name, opt)
        return tuple(seen.values())

    @property
    def label(self) -> str:
        """How messages name what it runs."""
        return str(self.source)

    # lifecycle: bookkeeping here, the work in _load()/_close()
    def load(self) -> "Backend":
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self) -> "Backend":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def card(self) -> ModelCard:
        """Model name, classes, PreprocessSpec and precision, read from the artefact."""
        if self._card is None:
            raise RuntimeError("call load() first")
        return self._card

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x C x H x W (the card's PreprocessSpec) -> float32 logits N x classes."""
        if not self.loaded:
            raise RuntimeError("call load() first")
        return self._infer(self._checked(batch))

    def infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and each image's out-of-distribution score (``ood_score``, float32 N), or None
        for the score when this artefact or runtime computes none (``gives_ood_score``)."""
        if not self.loaded:
            raise RuntimeError("call load() first")
        return self._infer_scored(self._checked(batch))

    @property
    def gives_ood_score(self) -> bool:
        """Whether ``infer_scored`` returns a score: the artefact computes one and this runtime
        hands it out (backends override; the base gives none)."""
        return False

    def _infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self._infer(batch), None

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        """The batch as contiguous float32, refused unless it is N x the card's input shape."""
        expected = self.card.preprocess.input_shape
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ConfigError(f"{self.label} expects N x {' x '.join(map(str, expected))} input, got {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """Where/how it runs (device, provider, precision): recorded in reports."""
        return {"backend": self.name, "path": str(self.source)}

    def synchronize(self) -> None:
        """Wait for queued device work (timing); a no-op for synchronous runtimes."""

    def declared_input_shape(self) -> tuple[int | None, ...] | None:
        """Per-sample input shape the loaded graph/engine declares (None: unknown or symbolic);
        checked against the card's PreprocessSpec before any image is read."""
        return None

    def declared_output_width(self) -> int | None:
        """Number of logits per sample the graph/engine declares, when it says."""
        return None

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:
        pass


class FileBackend(Backend):
    """A backend that runs a local file: ``load()`` refuses a missing or empty one by name before
    any runtime is imported, then the subclass's ``_open()`` reads it."""

    def __init__(self, path: str | Path, **options: Any):
        super().__init__(Path(path), **options)
        self.path = Path(path)

    @property
    def label(self) -> str:
        return self.path.name

    def _load(self) -> None:
        from bonedeploy.util.fs import require_file

        require_file(self.path, ArtefactError)
        self._open()

    @abc.abstractmethod
    def _open(self) -> None: ...


# Backend modules, imported on first lookup; each imports its runtime only in load().
_MODULES = {
    "torch": "bonedeploy.backends.torch",
    "onnxruntime": "bonedeploy.backends.onnxrt",
    "tensorrt": "bonedeploy.backends.tensorrt",
    "triton": "bonedeploy.backends.triton",
    "openvino": "bonedeploy.backends.openvino",
}
_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    if cls.name in _BACKENDS:
        raise ValueError(f"backend {cls.name!r} is already registered")
    _BACKENDS[cls.name] = cls
    return cls


def _import_all() -> None:
    for mod in _MODULES.values():
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a real import error inside the module, not a missing backend file
                raise


def list_backends() -> list[str]:
    _import_all()
    return list(_BACKENDS)


def get_backend(name: str) -> type[Backend]:
    _import_all()
    try:
        return _BACKENDS[name]
    except KeyError as e:
        raise ConfigError(f"unknown backend {name!r}; valid backends: {', '.join(_BACKENDS)}") from e


def backend_for_path(path: str | Path, backend: str | None = None) -> type[Backend]:
    """The backend class for a file: ``backend`` when given, else by suffix."""
    if backend:
        return get_backend(backend)
    _import_all()
    scheme = url_scheme(path)
    if scheme:
        for cls in _BACKENDS.values():
            if scheme in cls.schemes:
                return cls
        known = sorted(s for c in _BACKENDS.values() for s in c.schemes)
        raise ConfigError(f"{path}: no backend for {scheme}:// URLs; known schemes: {', '.join(known)}")
    suffix = Path(path).suffix.lower()
    for cls in _BACKENDS.values():
        if suffix in cls.suffixes:
            return cls
    known = sorted(s for c in _BACKENDS.values() for s in c.suffixes)
    raise ConfigError(f"{path}: no backend for suffix {suffix!r}; known suffixes: {', '.join(known)}")


def url_scheme(path: str | Path) -> str | None:
    """``grpc`` for ``grpc://host:port/name`` (also after ``Path()`` folded ``//`` into ``/``)."""
    text = str(path)
    head, sep, _ = text.partition(":/")
    return head.lower() if sep and head.isalpha() and len(head) > 1 else None


def is_remote(path: str | Path) -> bool:
    return url_scheme(path) is not None


def open_backend(path: str | Path, backend: str | None = None, **options: Any) -> Backend:
    """Construct (not load) the backend for ``path``."""
    return backend_for_path(path, backend)(path, **options)
