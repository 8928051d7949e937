"""OpenVINO backend for ``.onnx`` files (fp32, fp16, int8 QDQ) and OpenVINO IR (``.xml`` + ``.bin``).

Never imports torch; OpenVINO itself is imported only in ``load()`` (extra ``[openvino]``). The
card is read from the ONNX ``metadata_props``, which OpenVINO keeps as the model's
``framework`` rt_info (and ``save_model`` carries into the IR), through ``ModelCard.from_props``
like the onnxruntime backend.

Its options are declared on the class (``OPTIONS``; e.g. ``bonedeploy infer --backend-option
threads=2``). Why the defaults:

- ``hint=latency``: ``infer`` and ``bench`` issue one request at a time; the throughput hint and
  more streams split the cores between requests that never come (``benchmarks/openvino_settings.py``).
- ``inference_precision=f32``: OpenVINO's own default on CPUs with AVX512_BF16/AMX is bf16, which
  changes an fp32 artefact's numbers beyond its parity gate; f32 runs what was exported and gated.
  int8 layers run in int8 either way.
- ``shapes=dynamic``: one model compiled with a dynamic batch. ``static`` compiles one model per
  batch size seen; it is no faster per batch within the noise of a 2-core machine
  (``benchmarks/openvino_settings.py``), and at every start it parses and reshapes the model and
  compiles again for each new batch size (e.g. a folder's last partial batch), where a dynamic
  warm start compiles straight from the cached blob by path. Edge boxes restart often.
- ``cache=true`` keeps OpenVINO's compiled blob (CACHE_DIR) in a directory keyed by the
  artefact's sha256 (``bonedeploy.backends.modelcache``); a warm start then skips parsing and
  compiling. The blobs' size and CRC-32 are recorded: a changed or truncated blob is detected,
  wiped and rebuilt, never loaded.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.ood import OOD_OUTPUT
from bonedeploy.backends.base import FileBackend, register_backend
from bonedeploy.backends.options import Option
from bonedeploy.errors import ArtefactError, BackendUnavailableError

DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
MAX_STATIC = 4  # compiled models kept for ``shapes=static`` (a bench walks 1, 8, 32)
RUNTIME = "openvino"


@register_backend
class OpenVinoBackend(FileBackend):
    name = "openvino"
    suffixes = (".xml",)  # .onnx goes to onnxruntime by default; --backend openvino takes it too
    OPTIONS = (
        Option("device", "the OpenVINO device (auto: OpenVINO's AUTO plugin)", "cpu", choices=tuple(DEVICES),
               note="OpenVINO's devices; a CUDA GPU runs with --backend tensorrt or onnxruntime"),
        Option("hint", "the PERFORMANCE_HINT", "latency", choices=tuple(HINTS)),
        Option("threads", "INFERENCE_NUM_THREADS; default on the CPU: the physical cores this process may use",
               type=int, minimum=1),
        Option("streams", "NUM_STREAMS; default: what the hint chooses (1 for latency)", type=int, minimum=1),
        Option("inference_precision", "INFERENCE_PRECISION_HINT on the CPU", "f32", choices=("f32", "bf16", "f16"),
               aliases={"fp32": "f32", "fp16": "f16"}),
        Option("shapes", "dynamic: one model with a dynamic batch; static: one per batch size seen",
               "dynamic", choices=("dynamic", "static")),
        Option("cache", "keep the compiled blob, keyed by the artefact's sha256", True, type=bool),
        # Pinned threads cannot move off a core that another process is using: `serve` turns it off
        # (its model instances and Triton share the cores; benchmarks/serve.py).
        Option("pinning", "ENABLE_CPU_PINNING on the CPU; default: OpenVINO's (pinned)", type=bool),
    )

    def __init__(self, path, **options: Any):
        super().__init__(path, **options)
        self.device = DEVICES[self.options["device"]]
        self.hint = HINTS[self.options["hint"]]
        self.inference_precision = self.options["inference_precision"]
        self.shapes = self.options["shapes"]
        self.threads = self.options["threads"]
        if self.threads is None and self.device == "CPU":
            from bonedeploy.backends.onnxrt import physical_cores  # hyper-threads slow convolutions

            self.threads = physical_cores()
        self.streams = self.options["streams"]
        self.use_cache = self.options["cache"]
        self.cache_note: str | None = None
        self._compiled: OrderedDict[int | None, Any] = OrderedDict()

    # --- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(
                f"the openvino backend needs OpenVINO (pip install 'bonedeploy[openvino]'): {e}") from e
        self._ov = ov
        self._core = ov.Core()
        self.version = ov.get_version()
        if self.path.suffix.lower() == ".xml" and not self.path.with_suffix(".bin").is_file():
            raise ArtefactError(f"{self.path}: OpenVINO IR without its weights {self.path.with_suffix('.bin').name}")
        self._cache = self._open_cache()
        facts = self._cache.extra if self._cache is not None and not self._cache.fresh else None
        if facts and self.shapes == "dynamic" and facts["input"][0] is None:
            # Warm start: the card and shapes are in the manifest, the blob in CACHE_DIR; OpenVINO
            # compiles from the path and finds the blob without parsing the model.
            self._model = None
            self._card = ModelCard.from_dict(facts["card"], str(self.path))
            self._in_dims, self._out_dims = facts["input"], facts["output"]
            self._input_dtype = np.dtype(facts["input_dtype"])
        else:
            self._read()
        self._compile_for(None)
        compiled = getattr(self, "_compiled_model", None)
        self._ood_output = _has_output(compiled if compiled is not None else self._model, OOD_OUTPUT)

    def _read(self) -> None:
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with the parser's message
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ArtefactError(f"{self.path}: OpenVINO cannot read it ({first})") from e
        self._card = ModelCard.from_props(_framework_props(self._model), str(self.path))
        if len(self._model.inputs) != 1:
            raise ArtefactError(f"{self.path}: {len(self._model.inputs)} inputs; a classifier takes one")
        inp, out = self._model.inputs[0], self._model.outputs[0]
        self._in_dims = _dims(inp.get_partial_shape())
        self._out_dims = _dims(out.get_partial_shape())
        try:
            self._input_dtype = np.dtype(inp.get_element_type().to_dtype())
        except Exception as e:  # noqa: BLE001 -- an element type numpy cannot hold
            raise ArtefactError(f"{self.path}: input has element type {inp.get_element_type()}") from e
        if self._input_dtype.kind != "f":
            raise ArtefactError(f"{self.path}: input has type {self._input_dtype}; expected a float tensor")

    def _close(self) -> None:
        self._compiled.clear()
        self._model = self._core = None

    # --- compilation -------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The properties handed to ``compile_model`` (recorded by ``describe()``)."""
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if self.device == "CPU":
            cfg["INFERENCE_PRECISION_HINT"] = self.inference_precision
            if self.options["pinning"] is not None:
                cfg["ENABLE_CPU_PINNING"] = self.options["pinning"]
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            cfg["NUM_STREAMS"] = self.streams
        if self._cache is not None:
            cfg["CACHE_DIR"] = str(self._cache.path)
        return cfg

    def _compile_for(self, batch: int | None) -> Any:
        """The infer request for a batch size: one dynamic-batch model, or one per batch size."""
        key = None if self.shapes == "dynamic" else batch
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        if self.shapes == "static" and batch is None:
            return None  # compiled on first use, for the batch size that arrives
        try:
            request = self._compile(key)
        except Exception as e:  # noqa: BLE001 -- a refused cached blob: rebuild once, then give up
            if self._cache is None or isinstance(e, ArtefactError):
                raise self._compile_error(e) from e
            self._cache = self._cache.wipe(f"OpenVINO refused the cached blob ({_first(e)})")
            self.cache_note = self._cache.rebuilt_because
            try:
                request = self._compile(key)
            except Exception as e2:  # noqa: BLE001
                raise self._compile_error(e2) from e2
        self._compiled[key] = request
        while len(self._compiled) > MAX_STATIC:
            self._compiled.popitem(last=False)
        return request

    def _compile(self, batch: int | None) -> Any:
        if self.shapes == "dynamic" and self._in_dims[0] is None:
            # From the path, cold or warm alike, so OpenVINO's cache key is the same both times
            # and a warm start finds the blob without parsing the model.
            compiled = self._core.compile_model(str(self.path), self.device, self.config())
        else:
            model = self._model.clone()
            dims = [batch if batch is not None else -1, *[-1 if d is None else d for d in self._in_dims[1:]]]
            model.reshape({model.inputs[0]: self._ov.PartialShape(dims)})
            compiled = self._core.compile_model(model, self.device, self.config())
        self._compiled_model = compiled
        if self._cache is not None:
            self._record_cache()
        return compiled.create_infer_request()

    def _record_cache(self) -> None:
        blobs = self._cache.extra.get("blobs") or {}
        if _blob_sizes(self._cache.path) != {k: v["size"] for k, v in blobs.items()}:
            blobs = _blob_digests(self._cache.path)  # a new blob was written: hash it once
        facts = {"card": self.card.to_dict(), "input": self._in_dims, "output": self._out_dims,
                 "input_dtype": self._input_dtype.name, "blobs": blobs}
        if facts != self._cache.extra:
            self._cache.save(**facts)
            object.__setattr__(self._cache, "extra", facts)
            object.__setattr__(self._cache, "fresh", False)

    def _compile_error(self, e: Exception) -> ArtefactError:
        if isinstance(e, ArtefactError):
            return e
        return ArtefactError(f"{self.path}: OpenVINO cannot compile it for {self.device} ({_first(e)})")

    def _open_cache(self):
        """The artefact's cache directory, its recorded blobs verified (a mismatch is wiped)."""
        if not self.use_cache:
            return None
        from bonedeploy.backends import modelcache

        cache = modelcache.open_cache(self.path, RUNTIME, f"{self.version}-{self.device}")
        if cache is None:
            return None
        if cache.rebuilt_because:
            self.cache_note = f"cache rebuilt: {cache.rebuilt_because}"
        blobs = cache.extra.get("blobs") if not cache.fresh else None
        if not cache.fresh and (not blobs or _blob_digests(cache.path) != blobs):
            cache = cache.wipe("compiled blob changed or missing since it was recorded")
            self.cache_note = f"cache rebuilt: {cache.rebuilt_because}"
        return cache

    # --- inference ---------------------------------------------------------------------------
    def declared_input_shape(self) -> tuple[int | None, ...]:
        return tuple(self._in_dims[1:])

    def declared_output_width(self) -> int | None:
        return self._out_dims[-1] if self._out_dims else None

    @property
    def gives_ood_score(self) -> bool:
        return self.loaded and self._ood_output

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_scored(batch)[0]

    def _infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(batch) == 0:
            return np.zeros((0, len(self.card.classes)), np.float32), (
                np.zeros((0,), np.float32) if self._ood_output else None)
        request = self._compile_for(len(batch))
        request.infer({0: batch.astype(self._input_dtype, copy=False)})
        logits = np.array(request.get_output_tensor(0).data, dtype=np.float32)
        if not self._ood_output:
            return logits, None
        k = next(i for i, names in enumerate(_output_names(request)) if OOD_OUTPUT in names)
        return logits, np.array(request.get_output_tensor(k).data, dtype=np.float32).reshape(-1)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, hint=self.hint, threads=self.threads, streams=self.streams,
                 inference_precision=self.inference_precision, shapes=self.shapes,
                 cache=bool(self.loaded and self._cache is not None))
        if self.loaded:
            d["openvino_version"] = self.version
            d["precision"] = self.card.precision
            d["format"] = "ir" if self.path.suffix.lower() == ".xml" else "onnx"
            d["full_device_name"] = _device_name(self._core, self.device)
            compiled = getattr(self, "_compiled_model", None)
            if compiled is not None:
                for prop, key in (("NUM_STREAMS", "streams"), ("INFERENCE_NUM_THREADS", "threads"),
                                  ("EXECUTION_DEVICES", "execution_devices")):
                    try:
                        value = compiled.get_property(prop)
                        d[key] = list(value) if isinstance(value, (list, tuple)) else int(value) \
                            if isinstance(value, int) else str(value)
                    except Exception:  # noqa: BLE001 -- not every device reports every property
                        pass
        if self.cache_note:
            d["cache_note"] = self.cache_note
        return d


def _output_names(node) -> list[set[str]]:
    """The names of each output of a model, compiled model or infer request, in order."""
    outputs = node.model_outputs if hasattr(node, "model_outputs") else node.outputs
    return [set(o.get_names()) for o in outputs]


def _has_output(node, name: str) -> bool:
    return any(name in names for names in _output_names(node))


def _framework_props(model) -> dict[str, str]:
    """The ONNX metadata_props, as OpenVINO keeps them (rt_info ``framework``)."""
    info = model.get_rt_info()
    try:
        items = info["framework"].items()
    except (KeyError, IndexError, RuntimeError, AttributeError):  # absent, or not a map
        return {}
    return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in items}


def _dims(shape) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in shape]


def _blobs(d: Path) -> list[Path]:
    from bonedeploy.backends.modelcache import MANIFEST

    return sorted(p for p in Path(d).iterdir() if p.is_file() and p.name != MANIFEST)


def _blob_sizes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in _blobs(d)}


def _blob_digests(d: Path) -> dict[str, dict[str, Any]]:
    """Size and CRC-32 of every file OpenVINO left in the cache directory. CRC-32 catches what
    happens to a cache on an edge box (a truncated write, a flipped bit), and costs less than
    sha256; the blob is read on every start, so that is time off the cold start."""
    return {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)} for p in _blobs(d)}


def _crc32(path: Path, chunk: int = 1 << 22) -> str:
    import zlib

    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _device_name(core, device: str) -> str | None:
    try:
        return str(core.get_property(device if device != "AUTO" else "CPU", "FULL_DEVICE_NAME"))
    except Exception:  # noqa: BLE001
        return None


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]

