"""Build a TensorRT engine from an exported ONNX file (any precision) with a strongly typed network.

Only API that exists in both TensorRT 10.3+ (JetPack 6) and 11.x is called: ``Builder``,
``create_network`` (with ``STRONGLY_TYPED`` where the flag exists; TensorRT 11 ignores it and 10
needs it so the ONNX file's types are obeyed), ``OnnxParser.parse_from_file``, one optimisation
profile for the batch axis, ``set_memory_pool_limit(WORKSPACE)``, a timing cache and
``build_serialized_network``. Never ``BuilderFlag.FP16/INT8``, calibrators or ``EXPLICIT_BATCH``
(removed in 11): the precision comes from the ONNX file. ``tensorrt`` is imported inside functions
(typed by mypy against tensorrt-stubs: .ci/typecheck.sh).

A failed parse or build raises ``ArtefactError`` whose text carries every TensorRT message (each
parser error, every error TensorRT logged), one per line after a one-line summary: the caller
records it in export.json, where "see the log above" would be lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bonedeploy.errors import ArtefactError, BackendUnavailableError, ConfigError
from bonedeploy.util.fs import atomic_write, sha256_file
from bonedeploy.artefacts.naming import timing_cache_name  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import tensorrt as trt

    from bonedeploy.artefacts.card import ModelCard

DEFAULT_WORKSPACE_MB = 2048
MAX_PROFILE_BATCH = 4096


@dataclass(frozen=True)
class BatchProfile:
    """The batch axis of the engine's one optimisation profile: min <= opt <= max, all >= 1."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        vals = (self.min, self.opt, self.max)
        if any(not isinstance(v, int) or isinstance(v, bool) for v in vals):
            raise ConfigError(f"batch profile values must be integers, got {vals}")
        if not 1 <= self.min <= self.opt <= self.max <= MAX_PROFILE_BATCH:
            raise ConfigError(f"batch profile {self.min},{self.opt},{self.max}: need "
                              f"1 <= MIN <= OPT <= MAX <= {MAX_PROFILE_BATCH}")

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """``"1,8,32"`` (MIN,OPT,MAX) or one number N (a fixed batch: N,N,N)."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            nums = [int(p) for p in parts]
        except ValueError as e:
            raise ConfigError(f"--batch {text!r}: expected MIN,OPT,MAX integers, e.g. 1,8,32") from e
        if len(nums) == 1:
            nums *= 3
        if len(nums) != 3:
            raise ConfigError(f"--batch {text!r}: expected MIN,OPT,MAX (three integers), e.g. 1,8,32")
        return cls(*nums)

    def shapes(self, sample_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) full input shapes for ``IOptimizationProfile.set_shape``."""
        return tuple((b, *sample_shape) for b in (self.min, self.opt, self.max))

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


def default_cache_dir() -> Path | None:
    """Where timing caches live unless a directory is given; None when caching is switched off
    (``BONEDEPLOY_CACHE_DIR=off``: one rule for every cache, ``modelcache.cache_root``)."""
    from bonedeploy.backends.modelcache import cache_dir

    return cache_dir("tensorrt-timing")


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when TensorRT imports and a CUDA GPU is visible; else (False, why)."""
    try:
        from bonedeploy.backends.device_facts import runtime_facts

        runtime_facts()
    except BackendUnavailableError as e:
        return False, str(e)
    except Exception as e:  # noqa: BLE001 -- a broken install is "unavailable", with the reason
        return False, f"TensorRT/CUDA failed to initialise ({type(e).__name__}: {e})"
    return True, ""


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    sidecar_data: dict[str, Any]
    timing_cache: Path | None
    seconds: float


def build_engine(onnx_path: str | Path, engine_path: str | Path, card: ModelCard, profile: BatchProfile,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, cache_dir: str | Path | None = None,
                 use_timing_cache: bool = True, facts: dict[str, Any] | None = None,
                 log: Callable[[str], object] = print) -> BuildResult:
    """Parse ``onnx_path``, build a strongly typed engine, write it and its sidecar atomically."""
    from bonedeploy.artefacts.sidecar import build_sidecar, write_sidecar
    from bonedeploy.backends.device_facts import require_tensorrt, runtime_facts

    if workspace_mb < 1:
        raise ConfigError(f"workspace must be >= 1 MiB, got {workspace_mb}")
    require_tensorrt()
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    facts = facts or runtime_facts()
    t0 = time.perf_counter()
    logger, logged_errors = recording_logger()
    try:
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            raise ArtefactError(failure(f"{onnx_path}: TensorRT's ONNX parser failed",
                                        parser_errors(parser) + logged_errors))
        inp = network.get_input(0)
        dims = inp.shape
        sample = tuple(int(dims[i]) for i in range(1, len(dims)))
        if any(d < 1 for d in sample):
            sample = tuple(card.preprocess.input_shape)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(inp.name, *(trt.Dims(list(s)) for s in profile.shapes(sample)))
        config.add_optimization_profile(opt_profile)
        cache_file = None
        folder = cache_dir or default_cache_dir()  # a directory given explicitly wins over "off"
        if use_timing_cache and folder is not None:
            cache_file = Path(folder) / timing_cache_name(
                facts["gpu_name"], facts["compute_capability"], facts["tensorrt"])
            blob = cache_file.read_bytes() if cache_file.is_file() else b""
            if not config.set_timing_cache(config.create_timing_cache(blob), False):
                log(f"timing cache {cache_file} does not match this TensorRT/GPU; starting a new one")
                config.set_timing_cache(config.create_timing_cache(b""), False)
        log(f"building the TensorRT {facts['tensorrt']} engine from {onnx_path.name} "
            f"(batch {profile.min}/{profile.opt}/{profile.max}) ...")
        serialized = builder.build_serialized_network(network, config)
    except RuntimeError as e:  # TensorRT's Python bindings raise RuntimeError with its message
        raise ArtefactError(failure(f"{onnx_path}: TensorRT failed ({e})", logged_errors)) from e
    if serialized is None:
        raise ArtefactError(failure(f"{onnx_path}: TensorRT could not build an engine (try a larger "
                                    "--workspace or a smaller --batch MAX)", logged_errors))
    seconds = time.perf_counter() - t0
    with atomic_write(engine_path, "wb") as fh:
        fh.write(memoryview(serialized))
    if cache_file is not None:
        with atomic_write(cache_file, "wb") as fh:
            fh.write(memoryview(config.get_timing_cache().serialize()))
    prof = {"input": inp.name, **profile.to_dict(), "shapes": [list(s) for s in profile.shapes(sample)]}
    data = build_sidecar(facts, card, prof, onnx_path, sha256_file(onnx_path),
                         datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         round(seconds, 2), int(workspace_mb) << 20)
    return BuildResult(engine_path, write_sidecar(engine_path, data), data, cache_file, seconds)


def recording_logger() -> tuple[trt.ILogger, list[str]]:
    """A TensorRT logger that prints warnings and errors to stderr, like ``trt.Logger(WARNING)``,
    and keeps every error message so a failed build can say what TensorRT said."""
    import sys

    import tensorrt as trt

    errors: list[str] = []
    error, warning = int(trt.ILogger.Severity.ERROR), int(trt.ILogger.Severity.WARNING)

    class Recording(trt.ILogger):
        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            level = int(severity)
            if level <= warning:
                print(f"[TensorRT] {'ERROR' if level <= error else 'WARNING'}: {msg}", file=sys.stderr)
            if level <= error:
                errors.append(str(msg))

    return Recording(), errors


def failure(summary: str, messages: list[str]) -> str:
    """The summary line, then each TensorRT message (all of its lines) indented below it."""
    body = [line for m in messages for line in str(m).rstrip().splitlines()]
    return "\n".join([summary + (":" if body else ""), *("  " + line for line in body)])


def network_flags(trt: Any) -> int:
    """STRONGLY_TYPED where the enum has it (10.x: required to obey the ONNX types; 11.x: kept
    for compatibility and ignored); never EXPLICIT_BATCH (removed in 11, the default since 10)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def parser_errors(parser: trt.OnnxParser) -> list[str]:
    """Every parser error as TensorRT describes it: "[node 3 (Conv_3, Conv)] UNSUPPORTED_NODE: desc"."""
    msgs = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        node = err.node()
        where = f"[node {node} ({err.node_name()}, {err.node_operator()})] " if node >= 0 else ""
        msgs.append(f"{where}{err.code().name}: {err.desc()}")
    return msgs or ["no error detail reported"]
