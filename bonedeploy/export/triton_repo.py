"""The standard Triton model repository export.

``bonedeploy export X --triton-repo DIR`` writes ``DIR/NAME/config.pbtxt`` plus ``DIR/NAME/1/``
``model.onnx`` (platform ``onnxruntime_onnx``) or ``model.plan`` (``tensorrt_plan``), for the
official Triton container, with the ``ModelConfig`` of ``bonedeploy.artefacts.triton``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.naming import ENGINE_SUFFIXES
from bonedeploy.artefacts.triton import (
    DEFAULT_NAME,
    DEFAULT_QUEUE_DELAY_US,
    ModelConfig,
    TensorSpec,
    card_parameters,
    check_model_name,
    resolve_max_batch,
)
from bonedeploy.artefacts.ood import OOD_OUTPUT
from bonedeploy.errors import ArtefactError, ConfigError


@dataclass(frozen=True)
class RepoExport:
    repo: Path
    name: str
    config_path: Path
    model_path: Path
    platform: str
    max_batch_size: int


@dataclass(frozen=True)
class _Artefact:
    card: ModelCard
    input_name: str
    output_name: str
    input_dtype: str
    profile_max: int | None  # the engine's optimisation profile, when it has one
    ood: bool = False  # the graph's second output ood_score (one float per image)


def write_triton_repo(source: str | Path, repo: str | Path, name: str = DEFAULT_NAME,
                      max_batch: int | None = None, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                      instances: int = 1) -> RepoExport:
    """Write ``repo/name/{config.pbtxt, 1/model.onnx|model.plan}`` from an exported artefact."""
    from bonedeploy.util.fs import sha256_file, write_text

    source = Path(source)
    check_model_name(name)
    suffix = source.suffix.lower()
    if suffix not in REPO_FORMATS:
        raise ConfigError(f"{source}: a Triton repository takes {', '.join(sorted(REPO_FORMATS))} "
                          "files (export a checkpoint to ONNX first)")
    if not source.is_file():
        raise ArtefactError(f"{source}: no such file")
    platform, file_name, reader, kind = REPO_FORMATS[suffix]
    art = reader(source)
    batch = resolve_max_batch(max_batch, art.profile_max, source)
    k = len(art.card.classes)
    config = ModelConfig(
        name=name, platform=platform, max_batch_size=batch, max_queue_delay_us=max_queue_delay_us,
        instances=instances, kind=kind,
        inputs=(TensorSpec(art.input_name, art.input_dtype, art.card.preprocess.input_shape),),
        outputs=(TensorSpec(art.output_name, "TYPE_FP32", (k,)),
                 # one float per image: Triton batches [1] and the model's own shape is []
                 *((TensorSpec(OOD_OUTPUT, "TYPE_FP32", (1,), reshape=()),) if art.ood else ())),
        parameters=card_parameters(art.card, sha256_file(source)))
    model_dir = Path(repo) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    model_path = version_dir / file_name
    tmp = version_dir / f".{file_name}.tmp"
    shutil.copyfile(source, tmp)
    tmp.replace(model_path)
    config_path = model_dir / "config.pbtxt"
    write_text(config_path, config.to_pbtxt())
    return RepoExport(Path(repo), name, config_path, model_path, platform, batch)


def repo_source(result) -> Path:
    """The file a checkpoint export puts in the repository: its TensorRT engine when one was
    built, else the ONNX file of the first precision exported (the list is in PRECISIONS order)."""
    eng = result.engine or {}
    if eng.get("built"):
        return Path(result.out_dir) / eng["path"]
    onnx = [f for f in result.files if f.kind == "onnx"]
    if not onnx:
        raise ArtefactError(f"{result.out_dir}: the export wrote no ONNX file for the Triton repository")
    return onnx[0].path


def _read_onnx(path: Path) -> _Artefact:
    from bonedeploy.backends.onnxrt import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, provider="cpu", threads=1) as b:
        sess = b._session
        inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
        if b._fixed_batch is not None:
            raise ArtefactError(f"{path}: the graph has a fixed batch of {b._fixed_batch}; Triton's "
                                "dynamic batching needs a free batch axis (re-export it)")
        dtype = "TYPE_FP16" if inp.type == "tensor(float16)" else "TYPE_FP32"
        return _Artefact(b.card, inp.name, out.name, dtype, None, b.gives_ood_score)


def _read_plan(path: Path) -> _Artefact:
    """From the sidecar alone: writing the repository needs no TensorRT (the container has it)."""
    from bonedeploy.artefacts.sidecar import card_from_sidecar, read_sidecar

    from bonedeploy.export.onnx import INPUT_NAME, OUTPUT_NAME

    side = read_sidecar(path)
    prof = side.get("profile") or {}
    card = card_from_sidecar(side, str(path))
    # built from an ONNX file of this card: it has the OOD head exactly when the card has a gate
    return _Artefact(card, prof.get("input") or INPUT_NAME, prof.get("output") or OUTPUT_NAME, "TYPE_FP32",
                     int(prof["max"]) if prof.get("max") else None, card.ood is not None)


# suffix -> (platform, file name in the version folder, reader, instance kind)
REPO_FORMATS: dict[str, tuple[str, str, Any, str]] = {
    ".onnx": ("onnxruntime_onnx", "model.onnx", _read_onnx, "KIND_AUTO"),
    **{s: ("tensorrt_plan", "model.plan", _read_plan, "KIND_GPU") for s in ENGINE_SUFFIXES},
}
