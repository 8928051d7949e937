"""ONNX Runtime backend for ``.onnx`` files (fp32, fp16 and int8 QDQ graphs alike).

Never imports torch: this is the edge path. Its options are declared on the class (``OPTIONS``).
Why the defaults: ``threads`` are the physical cores this process may use, because hyper-threads
slow convolutions down; ``spinning=False`` is what ``infer`` sets while decoder processes share
the CPU, where spinning intra-op threads would steal their time.

The TensorRT EP is never chosen automatically: it builds a TensorRT engine when the session opens
(minutes for a real model), so every process would rebuild it and bench's "ONNX" rows would time
that build. With ``provider="tensorrt"`` it comes first (then CUDA EP, CPU) with its engine and
timing caches on, under ``<cache root>/ort-trt/<GPU>-sm<CC>-trt<TensorRT>-ort<ORT>/`` (the
cache root and its ``off`` switch: ``modelcache.cache_root``; the key of our own timing cache plus
the onnxruntime version): timings in ``timing/``, engines in ``<model sha256>/``, so a second
process, or a second run, loads the cached engine instead. With caching off the EP builds its
engine every time. For a TensorRT engine proper, export one (``bonedeploy export``) and use the
tensorrt backend.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.ood import OOD_OUTPUT
from bonedeploy.backends.base import FileBackend, register_backend
from bonedeploy.backends.options import Option
from bonedeploy.errors import ArtefactError, BackendUnavailableError, ConfigError

TENSORRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (CUDA_EP, CPU_EP)  # the automatic choice; TENSORRT_EP only when asked for
GPU_PROVIDERS = (TENSORRT_EP, CUDA_EP)
DEVICES = ("auto", "cpu", "cuda")
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (Linux sysfs), else os.cpu_count()."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        sib = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(sib.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def resolve_provider(requested: str | None, available: list[str], device: str = "auto") -> list[str]:
    """The provider chain to hand to onnxruntime (best first, CPU last as the fallback)."""
    if device not in DEVICES:
        raise ConfigError(f"onnxruntime backend: device {device!r}; valid: {', '.join(DEVICES)}")
    if requested:
        wanted = requested if requested.endswith("ExecutionProvider") else None
        for name in available:
            alias = name.removesuffix("ExecutionProvider").lower()
            if name == requested or alias == requested.lower():
                wanted = name
        if wanted not in available:
            raise ConfigError(f"onnxruntime provider {requested!r} is not available here; "
                              f"available providers: {', '.join(available)}")
        # TensorRT EP hands the nodes TensorRT cannot run to the CUDA EP, then the CPU.
        after = [CUDA_EP] if wanted == TENSORRT_EP and CUDA_EP in available else []
        return [wanted, *after] + ([CPU_EP] if wanted != CPU_EP else [])
    chain = [p for p in PREFERENCE if p in available]
    if device == "cpu":
        chain = [CPU_EP]
    elif device == "cuda":
        if CUDA_EP not in chain:
            raise BackendUnavailableError(
                f"device=cuda but this onnxruntime has no CUDA provider; available: {', '.join(available)} "
                "(install onnxruntime-gpu)")
        chain = [CUDA_EP, CPU_EP]
    return chain or [CPU_EP]


def provider_options(chain: list[str], trt_cache_dir: Path | None) -> list[dict[str, str]]:
    """onnxruntime's per-provider options, aligned with ``chain``: the TensorRT EP gets its engine
    and timing caches (under ``trt_cache_dir``, see ``ort_trt_cache_dir``), the others none."""
    opts: list[dict[str, str]] = []
    for name in chain:
        if name == TENSORRT_EP and trt_cache_dir is not None:
            opts.append({
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(trt_cache_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(trt_cache_dir.parent / "timing"),
            })
        else:
            opts.append({})
    return opts


def ort_trt_cache_dir(model_sha256: str, gpu_name: str, compute_capability: str, tensorrt_version: str,
                      ort_version: str, base: Path) -> Path:
    """``<base>/<GPU>-sm<CC>-trt<ver>-ort<ver>/<sha256>``: engines are tied to the GPU, the TensorRT
    release and the model; ORT's cache format to its own version. Keyed like our timing cache."""
    from bonedeploy.artefacts.naming import timing_cache_name  # one naming rule for both caches

    machine = timing_cache_name(gpu_name, compute_capability, tensorrt_version).removesuffix(".cache")
    return base / f"{machine}-ort{ort_version}" / model_sha256


def _tensorrt_version() -> str:
    """TensorRT's version as the TensorRT EP will load it (the pip wheel), else "unknown"."""
    import importlib.metadata as md

    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs", "tensorrt-cu12-libs"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "unknown"


@register_backend
class OnnxRuntimeBackend(FileBackend):
    name = "onnxruntime"
    suffixes = (".onnx",)
    OPTIONS = (
        Option("provider", "an execution provider name or alias (cpu, cuda, tensorrt); default: the best "
               "of CUDA EP > CPU that this onnxruntime offers"),
        Option("device", "restricts the automatic provider choice", "auto", choices=DEVICES),
        Option("threads", "intra-op threads; default: the physical cores this process may use",
               type=int, minimum=1),
        Option("spinning", "false: idle intra-op threads sleep instead of spinning; default: "
               "onnxruntime's (spin)", type=bool),
        Option("prepack", "false: weights are not pre-packed for the CPU kernels: the session opens "
               "sooner and every run is slower, what a single run wants (benchmarks/ort_session.py); "
               "default: onnxruntime's (pre-pack)", type=bool),
    )

    def __init__(self, path, **options: Any):
        super().__init__(path, **options)
        self.provider = self.options["provider"]
        self.device = self.options["device"]
        self.threads = self.options["threads"] or physical_cores()
        self.spinning = self.options["spinning"]  # None: onnxruntime's default (spin)
        self.prepack = self.options["prepack"]  # None: onnxruntime's default (pre-pack)
        self.fallback: str | None = None
        self.trt_cache: Path | None = None

    def _open(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(f"the onnxruntime backend needs onnxruntime ({e})") from e
        chain = resolve_provider(self.provider, ort.get_available_providers(), self.device)
        self.trt_cache = self._trt_cache_dir(ort) if TENSORRT_EP in chain else None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.spinning is False:  # idle threads sleep: the CPU goes to concurrent decoders
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.prepack is False:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        self._session = self._create_session(ort, opts, chain)
        meta = self._session.get_modelmeta().custom_metadata_map
        self._card = ModelCard.from_props(meta, str(self.path))
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._input_dtype = _NP_TYPES.get(inp.type)
        if self._input_dtype is None:
            raise ArtefactError(f"{self.path}: input {inp.name!r} has type {inp.type}; expected a float tensor")
        self._input_dims = list(inp.shape)
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self.output_names = [o.name for o in self._session.get_outputs()]

    def _trt_cache_dir(self, ort) -> Path | None:
        """The TensorRT EP's engine cache for this model and machine; None when caching is off."""
        from bonedeploy.backends.device_facts import cuda_facts
        from bonedeploy.backends.modelcache import artefact_sha256, cache_dir

        base = cache_dir("ort-trt")
        if base is None:
            return None
        try:
            gpu = cuda_facts()
        except BackendUnavailableError:  # the EP will then fail to start, with its own reason
            gpu = {"gpu_name": "unknown-gpu", "compute_capability": "0.0"}
        path = ort_trt_cache_dir(artefact_sha256(self.path), gpu["gpu_name"], gpu["compute_capability"],
                                 _tensorrt_version(), ort.__version__, base)
        for folder in (path, path.parent / "timing"):
            folder.mkdir(parents=True, exist_ok=True)
        return path

    def _create_session(self, ort, opts, chain: list[str]):
        """Open the session; when an automatically chosen accelerator fails to initialise (e.g. the
        CUDA EP without CUDA libraries), retry with the next provider and record why."""
        while True:
            try:
                return ort.InferenceSession(str(self.path), sess_options=opts, providers=chain,
                                            provider_options=provider_options(chain, self.trt_cache))
            except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                if self.provider is None and len(chain) > 1 and not _is_model_error(e):
                    self.fallback = f"{chain[0]} failed ({first}); using {chain[1]}"
                    chain = chain[1:]
                    continue
                raise ArtefactError(f"{self.path}: onnxruntime cannot load it ({first})") from e

    def declared_input_shape(self) -> tuple[int | None, ...]:
        """Per-sample input shape the graph declares (None for symbolic dimensions)."""
        return tuple(d if isinstance(d, int) else None for d in self._input_dims[1:])

    def declared_output_width(self) -> int | None:
        d = self._session.get_outputs()[0].shape
        return d[-1] if d and isinstance(d[-1], int) else None

    @property
    def gives_ood_score(self) -> bool:
        return self.loaded and OOD_OUTPUT in self.output_names

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(batch)[0], dtype=np.float32)

    def _infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = dict(zip(self.output_names, self._run(batch)))
        score = outs.get(OOD_OUTPUT)
        return (np.asarray(outs[self.output_names[0]], dtype=np.float32),
                None if score is None else np.asarray(score, dtype=np.float32).reshape(-1))

    def infer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name (an explain graph's ``logits`` and ``cam``)."""
        if not self.loaded:
            raise RuntimeError("call load() first")
        return dict(zip(self.output_names, self._run(self._checked(batch))))

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = batch.astype(self._input_dtype, copy=False)
        if self._fixed_batch is None or len(x) == 0:
            return self._session.run(None, {self._input_name: x})
        # A graph exported with a fixed batch: run full chunks, zero-pad the last one.
        b, parts = self._fixed_batch, []
        for s in range(0, len(x), b):
            chunk = x[s:s + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
            parts.append([out[:n] for out in self._session.run(None, {self._input_name: chunk})])
        return [np.concatenate(outs) for outs in zip(*parts)]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(threads=self.threads, spinning=self.spinning is not False, requested_provider=self.provider,
                 device=self.device)
        if self.loaded:
            d["providers"] = self._session.get_providers()
            d["precision"] = self.card.precision
        if self.fallback:
            d["provider_fallback"] = self.fallback
        if self.trt_cache is not None:
            d["tensorrt_cache"] = str(self.trt_cache)
        return d

    def _close(self) -> None:
        self._session = None


def _is_model_error(e: Exception) -> bool:
    """Errors about the file itself: retrying with another provider would not help."""
    name, msg = type(e).__name__, str(e)
    return name in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile") or "Protobuf parsing failed" in msg
