"""``explain(ExplainConfig)``: Grad-CAM maps and overlays for images, from a ``.pt`` or a
``model.explain.onnx``; also the per-batch hook ``infer --explain`` uses.

Per image: ``DIR/<stem>.npy`` (float32 H x W in [0, 1] at the model's input resolution) and
``DIR/<stem>.png`` (the overlay on the preprocessed image, labelled with the decision and the
calibrated probability). The decision is the shared post-processing's (``eval.decision``): the
card's temperature and operating point. An unreadable image is reported and the others go on.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from bonedeploy.errors import ArtefactError, BonedeployError, ConfigError, DataError
from bonedeploy.util.defaults import none_means_default

if TYPE_CHECKING:
    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.backends.base import Backend


class Explainer(abc.ABC):
    """Logits and Grad-CAM maps for a batch, from the Backend it wraps: ``load()`` opens the
    backend (the artefact and its card), ``close()`` releases it."""

    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: Path, layer: str | None = None):
        self.path, self.layer = Path(path), layer
        self.backend = self._backend(self.path)

    @property
    def card(self) -> ModelCard:
        return self.backend.card

    def load(self) -> "Explainer":
        if not self.backend.loaded:
            self.backend.load()
            try:
                self._check()
            except BaseException:
                self.backend.close()
                raise
        return self

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Explainer":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def _backend(self, path: Path) -> Backend: ...

    @abc.abstractmethod
    def _check(self) -> None:
        """Once the backend is open: find the layer the maps are computed at."""

    @abc.abstractmethod
    def logits_and_cams(self, x: np.ndarray, choose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits N x C, chosen class per image, cams N x H x W); ``choose(logits)`` -> classes."""


class TorchExplainer(Explainer):
    """A ``.pt`` through the torch backend (fp32 on the CPU), maps from pytorch-grad-cam."""

    suffixes = (".pt", ".pth")

    def _backend(self, path: Path) -> Backend:
        from bonedeploy.backends.torch import TorchBackend

        return TorchBackend(path, device="cpu", precision="fp32")

    def _check(self) -> None:
        from bonedeploy.explain.layers import default_layer, resolve_layer
        from bonedeploy.models import get_model_entry

        model = self.backend.model
        self.layer = self.layer or default_layer(get_model_entry(self.card.model).family, model)
        self.module = resolve_layer(model, self.layer)

    def logits_and_cams(self, x, choose):
        from bonedeploy.explain.gradcam import torch_cams

        logits = self.backend.infer(x)
        targets = choose(logits)
        return logits, targets, torch_cams(self.backend.model, x, self.module, targets)


class OnnxExplainer(Explainer):
    """``model.explain.onnx`` through the onnxruntime backend on the CPU: no torch."""

    suffixes = (".explain.onnx",)

    def _backend(self, path: Path) -> Backend:
        from bonedeploy.backends.onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, provider="cpu")

    def _check(self) -> None:
        outs = self.backend.output_names
        if outs != ["logits", "cam"]:
            raise ArtefactError(f"{self.path}: no 'cam' output (outputs {outs}); write one with "
                                "`bonedeploy export best.pt --explain` or explain the .pt")
        cam = (self.card.extra or {}).get("cam") or {}
        if self.layer and self.layer != cam.get("layer"):
            raise ConfigError(f"--layer {self.layer}: {self.path.name} computes its map at layer "
                              f"{cam.get('layer')!r}, fixed at export (re-export with --layer, or use the .pt)")
        self.layer = cam.get("layer")

    def logits_and_cams(self, x, choose):
        out = self.backend.infer_outputs(x)
        logits, cams = np.asarray(out["logits"], dtype=np.float32), out["cam"]
        targets = choose(logits)
        return logits, targets, np.asarray(cams[np.arange(len(x)), targets], dtype=np.float32)


EXPLAINERS: tuple[type[Explainer], ...] = (OnnxExplainer, TorchExplainer)


def explainer_for(path: str | Path, layer: str | None = None) -> Explainer:
    name = Path(path).name.lower()
    for cls in EXPLAINERS:
        if name.endswith(cls.suffixes):
            return cls(Path(path), layer)
    sibling = Path(path).with_name(Path(path).name.removesuffix(".onnx") + ".explain.onnx")
    hint = f" ({sibling.name} is beside it)" if sibling.is_file() else ""
    raise ConfigError(f"{path}: cannot explain this artefact{hint}; explain a .pt checkpoint or a "
                      f"model.explain.onnx (`bonedeploy export best.pt --explain`); valid suffixes: "
                      f"{', '.join(s for c in EXPLAINERS for s in c.suffixes)}")


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class ExplainConfig:
    engine: Path
    inputs: tuple[Path, ...]
    out: Path
    layer: str | None = None
    target: str = "predicted"  # predicted | a class name
    threshold: float | None = None  # overrides the card's operating point
    batch_size: int = 8


@dataclass
class ExplainResult:
    out: Path
    written: list[dict[str, Any]] = field(default_factory=list)  # path, npy, png, decision, p, target
    errors: list[tuple[str, str]] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    layer: str | None = None


class Writer:
    """Chooses targets by the shared decision rule and writes one .npy + .png per image."""

    def __init__(self, explainer: Explainer, out: Path, target: str = "predicted",
                 threshold: float | None = None):
        from bonedeploy.eval.decision import rule_for

        self.explainer, self.out = explainer, Path(out)
        self.rule = rule_for(explainer.card, threshold)
        classes = list(explainer.card.classes)
        if target != "predicted" and target not in classes:
            raise ConfigError(f"--target {target!r}: valid: predicted, {', '.join(classes)}")
        self.target = target
        self.stems: dict[str, int] = {}

    def choose(self, logits: np.ndarray) -> np.ndarray:
        if self.target == "predicted":
            return self.rule.apply(logits)[1]
        return np.full(len(logits), list(self.explainer.card.classes).index(self.target))

    def write(self, paths: Sequence[Path], x: np.ndarray, decided: np.ndarray | None = None,
              probs: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Maps and overlays for ``x``; ``decided``/``probs``: decisions already made by another
        engine (``infer --explain``), mapped and labelled as such."""
        choose = self.choose if decided is None or self.target != "predicted" else (lambda _l: np.asarray(decided))
        logits, targets, cams = self.explainer.logits_and_cams(x, choose)
        if decided is None:
            probs, decided = self.rule.apply(logits)
        classes, pos = list(self.explainer.card.classes), self.rule.positive_index
        done = []
        for i, p in enumerate(paths):
            stem = self._stem(Path(p))
            npy, png = self.out / f"{stem}.npy", self.out / f"{stem}.png"
            self.out.mkdir(parents=True, exist_ok=True)
            np.save(npy, cams[i].astype(np.float32))
            k = pos if pos is not None else int(decided[i])
            label = (f"{classes[decided[i]]}  p({classes[k]})={probs[i, k]:.3f}"
                     + (f"  (t={self.rule.threshold:.3f})" if self.rule.threshold is not None else "")
                     + (f"  map: {classes[targets[i]]}" if targets[i] != decided[i] else ""))
            from bonedeploy.explain.overlay import write_overlay

            write_overlay(png, x[i], cams[i], label)
            done.append({"path": str(p), "npy": str(npy), "png": str(png), "decision": classes[decided[i]],
                         "p": float(probs[i, k]), "target": classes[targets[i]]})
        return done

    def _stem(self, path: Path) -> str:
        n = self.stems.get(path.stem, 0)
        self.stems[path.stem] = n + 1
        return path.stem if n == 0 else f"{path.stem}-{n + 1}"


def explainer_for_infer(engine: str | Path) -> Explainer:
    """For ``infer --explain``: the engine itself when it can explain, else the
    ``model.explain.onnx`` beside it (its maps are fp32 ones; the decisions stay the engine's)."""
    from bonedeploy.artefacts.naming import explain_filename

    engine = Path(engine)
    if engine.name.lower().endswith(tuple(s for c in EXPLAINERS for s in c.suffixes)):
        return explainer_for(engine)
    beside = engine.with_name(explain_filename())
    if beside.is_file():
        return explainer_for(beside)
    raise ConfigError(f"--explain: {engine.name} has no Grad-CAM output and there is no {beside.name} beside "
                      f"it; run `bonedeploy export best.pt --explain`, or infer with the .pt")


def explain(config: ExplainConfig) -> ExplainResult:
    from bonedeploy.data.folders import list_images
    from bonedeploy.data.imageio import load_preprocessed

    paths, _skipped = list_images(config.inputs)
    if not paths:
        raise DataError(f"no images in {', '.join(map(str, config.inputs))}")
    with explainer_for(config.engine, config.layer) as explainer:
        writer = Writer(explainer, config.out, config.target, config.threshold)
        result = ExplainResult(Path(config.out), decision=writer.rule.describe(), layer=explainer.layer)
        spec = explainer.card.preprocess
        for start in range(0, len(paths), config.batch_size):
            batch, xs = [], []
            for p in paths[start:start + config.batch_size]:
                try:
                    xs.append(load_preprocessed(p, spec))
                    batch.append(p)
                except BonedeployError as e:
                    result.errors.append((str(p), str(e)))
            if batch:
                result.written += writer.write(batch, np.stack(xs).astype(np.float32))
    return result
