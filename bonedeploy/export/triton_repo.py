"""Triton model configurations and the standard model repository export.

``bonedeploy export X --triton-repo DIR`` writes ``DIR/NAME/config.pbtxt`` plus ``DIR/NAME/1/``
``model.onnx`` (platform ``onnxruntime_onnx``) or ``model.plan`` (``tensorrt_plan``), for the
official Triton container. ``bonedeploy serve`` writes its Python-backend models with the same
``ModelConfig`` so both carry the card the same way. The text is written here (no protobuf
dependency: an ``.onnx`` export must run on a bare edge install); tests parse it with Triton's own
``model_config_pb2`` schema.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ArtefactError, ConfigError
from bonedeploy.serve.protocol import card_parameters

DEFAULT_NAME = "bonedeploy"
DEFAULT_MAX_BATCH = 32  # for graphs with a free batch axis (no optimisation profile to cap it)
DEFAULT_QUEUE_DELAY_US = 2000
KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
DTYPES = ("TYPE_FP32", "TYPE_FP16", "TYPE_STRING", "TYPE_INT64")
# Triton model names become URL path segments and directory names.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]  # without the batch axis

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"tensor {self.name}: data type {self.dtype!r}; valid: {', '.join(DTYPES)}")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    platform: str | None = None  # onnxruntime_onnx | tensorrt_plan
    backend: str | None = None  # python
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    kind: str = "KIND_AUTO"
    parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_model_name(self.name)
        if (self.platform is None) == (self.backend is None):
            raise ConfigError("a Triton model config needs exactly one of platform and backend")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1, got {self.instances}")
        if self.kind not in KINDS:
            raise ConfigError(f"instance kind {self.kind!r}; valid: {', '.join(KINDS)}")

    def to_pbtxt(self) -> str:
        lines = [f"name: {_q(self.name)}"]
        lines.append(f"platform: {_q(self.platform)}" if self.platform else f"backend: {_q(self.backend)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        lines += _tensors("input", self.inputs) + _tensors("output", self.outputs)
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {self.max_queue_delay_us}", "}",
                  "instance_group [", f"  {{ kind: {self.kind} count: {self.instances} }}", "]"]
        for key, value in self.parameters.items():
            lines.append(f"parameters {{ key: {_q(key)} value {{ string_value: {_q(value)} }} }}")
        return "\n".join(lines) + "\n"


def check_model_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise ConfigError(f"model name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    return name


def _q(s: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensors(kind: str, specs: tuple[TensorSpec, ...]) -> list[str]:
    out = [f"{kind} ["]
    for i, t in enumerate(specs):
        sep = "," if i < len(specs) - 1 else ""
        out.append(f"  {{ name: {_q(t.name)} data_type: {t.dtype} dims: [ {', '.join(map(str, t.dims))} ] }}{sep}")
    out.append("]")
    return out


# --- the repository export ---------------------------------------------------------------------

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
        outputs=(TensorSpec(art.output_name, "TYPE_FP32", (k,)),),
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


def resolve_max_batch(requested: int | None, profile_max: int | None, where: str | Path) -> int:
    """``--max-batch`` within the engine's optimisation profile; the profile's maximum by default."""
    if requested is not None and requested < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {requested}")
    if profile_max is not None and requested is not None and requested > profile_max:
        raise ConfigError(f"--max-batch {requested} exceeds the optimisation profile of {where} "
                          f"(max batch {profile_max}); use --max-batch {profile_max} or less, or "
                          "rebuild the engine with a larger --batch")
    return requested or profile_max or DEFAULT_MAX_BATCH


def _read_onnx(path: Path) -> _Artefact:
    from bonedeploy.backends.onnxrt import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, provider="cpu", threads=1) as b:
        sess = b._session
        inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
        if b._fixed_batch is not None:
            raise ArtefactError(f"{path}: the graph has a fixed batch of {b._fixed_batch}; Triton's "
                                "dynamic batching needs a free batch axis (re-export it)")
        dtype = "TYPE_FP16" if inp.type == "tensor(float16)" else "TYPE_FP32"
        return _Artefact(b.card, inp.name, out.name, dtype, None)


def _read_plan(path: Path) -> _Artefact:
    """From the sidecar alone: writing the repository needs no TensorRT (the container has it)."""
    from bonedeploy.artefacts.sidecar import card_from_sidecar, read_sidecar

    from bonedeploy.export.onnx import INPUT_NAME, OUTPUT_NAME

    side = read_sidecar(path)
    prof = side.get("profile") or {}
    return _Artefact(card_from_sidecar(side, str(path)), prof.get("input") or INPUT_NAME,
                     prof.get("output") or OUTPUT_NAME, "TYPE_FP32",
                     int(prof["max"]) if prof.get("max") else None)


# suffix -> (platform, file name in the version folder, reader, instance kind)
REPO_FORMATS: dict[str, tuple[str, str, Any, str]] = {
    ".onnx": ("onnxruntime_onnx", "model.onnx", _read_onnx, "KIND_AUTO"),
    ".trt": ("tensorrt_plan", "model.plan", _read_plan, "KIND_GPU"),
    ".engine": ("tensorrt_plan", "model.plan", _read_plan, "KIND_GPU"),
    ".plan": ("tensorrt_plan", "model.plan", _read_plan, "KIND_GPU"),
}
