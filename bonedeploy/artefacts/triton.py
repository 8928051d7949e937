"""The Triton side of an artefact: the names a bonedeploy deployment's server and clients agree on,
and the model configuration that carries the card.

Both ``bonedeploy export --triton-repo`` (official container) and ``bonedeploy serve`` (the
bundled server's Python-backend models) write ``ModelConfig``; the remote client reads the card
back from the config parameters. An on-disk and on-the-wire format, so it sits below both. The
text is written here (no protobuf dependency: it must run on a bare edge install); tests parse it
with Triton's own ``model_config_pb2`` schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ArtefactError, ConfigError

IMAGE = "image"  # NAME: FP32 N x C x H x W, preprocessed to the card's spec
LOGITS = "logits"
PROBS = "probs"
FILE = "file"  # NAME_file: BYTES N x 1, the encoded file of each item
LABEL = "label"
STATUS = "status"  # "ok" or "error: <cause>"
FILE_SUFFIX = "_file"
OK = "ok"
SERVE_SPEC = "serve.json"  # beside model.py: what the Python-backend model loads (not served)


def file_model(name: str) -> str:
    return name + FILE_SUFFIX


# Model-config parameters (config.pbtxt, `GET /v2/models/NAME/config`): the card travels there.
CARD_PARAM = "bonedeploy.card"
SHA_PARAM = "bonedeploy.artefact_sha256"


def card_parameters(card: ModelCard, sha256: str | None) -> dict[str, str]:
    """The card as config parameters: all of it as JSON, and the artefact's sha256 on its own."""
    params = {CARD_PARAM: json.dumps(card.to_dict(), sort_keys=True)}
    if sha256:
        params[SHA_PARAM] = sha256
    return params


def card_from_parameters(params: dict[str, Any], where: str) -> tuple[ModelCard, str | None]:
    """Inverse of ``card_parameters``; accepts Triton's JSON ({"string_value": ...}) or plain strings."""
    def text(key: str) -> str | None:
        v = params.get(key)
        return v.get("string_value") if isinstance(v, dict) else v

    raw = text(CARD_PARAM)
    if not raw:
        raise ArtefactError(f"{where}: the model config has no {CARD_PARAM} parameter "
                            "(is it a bonedeploy model?)")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ArtefactError(f"{where}: malformed {CARD_PARAM} parameter ({e})") from e
    return ModelCard.from_dict(data, where), text(SHA_PARAM)


# --- model configuration (config.pbtxt) ---------------------------------------------------------

DEFAULT_NAME = "bonedeploy"
DEFAULT_MAX_BATCH = 32  # for graphs with a free batch axis (no optimisation profile to cap it)
# How long Triton holds a request to batch it with others: one truth for `serve`, the exported
# repository and the remote client's docs. 20 ms fills batch 8 at 8 clients on 2 cores (0.89x
# in-process against 0.82x, in different windows of a shared machine) but adds 20 ms to every lone
# request (benchmarks/results/serve-*.md).
DEFAULT_QUEUE_DELAY_US = 1000
KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
DTYPES = ("TYPE_FP32", "TYPE_FP16", "TYPE_STRING", "TYPE_INT64")
# Triton model names become URL path segments and directory names.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]  # without the batch axis
    reshape: tuple[int, ...] | None = None  # the model's own shape, when it differs (ood_score: [])

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
        reshape = "" if t.reshape is None else f" reshape: {{ shape: [ {', '.join(map(str, t.reshape))} ] }}"
        out.append(f"  {{ name: {_q(t.name)} data_type: {t.dtype} dims: [ {', '.join(map(str, t.dims))} ]"
                   f"{reshape} }}{sep}")
    out.append("]")
    return out


def resolve_max_batch(requested: int | None, profile_max: int | None, where: str | Path) -> int:
    """``--max-batch`` within the engine's optimisation profile; the profile's maximum by default."""
    if requested is not None and requested < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {requested}")
    if profile_max is not None and requested is not None and requested > profile_max:
        raise ConfigError(f"--max-batch {requested} exceeds the optimisation profile of {where} "
                          f"(max batch {profile_max}); use --max-batch {profile_max} or less, or "
                          "rebuild the engine with a larger --batch")
    return requested or profile_max or DEFAULT_MAX_BATCH
