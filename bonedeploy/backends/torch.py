"""PyTorch backend for ``.pt`` checkpoints: CPU or CUDA, fp32 or fp16, optional CUDA-graph replay.

Options are declared on the class (``OPTIONS``). fp16 needs CUDA: on the CPU it is refused rather
than silently run in fp32, because a user asking for fp16 is measuring or validating fp16. The
CUDA graph is captured once for ``batch_size``; smaller batches are padded to it, larger ones split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bonedeploy.backends.base import FileBackend, register_backend
from bonedeploy.backends.options import Option
from bonedeploy.errors import BackendUnavailableError, ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
VALID_COMBOS = "device=cpu with precision=fp32; device=cuda with precision=fp32|fp16 (optionally cuda_graph)"


@register_backend
class TorchBackend(FileBackend):
    name = "torch"
    suffixes = (".pt", ".pth")
    OPTIONS = (
        Option("device", "where it runs (auto: CUDA when torch sees a GPU)", "auto", choices=DEVICES),
        Option("precision", "fp16 needs CUDA", "fp32", choices=PRECISIONS),
        Option("cuda_graph", "replay one captured CUDA graph (CUDA only; needs batch_size)", False, type=bool),
        Option("warmup", "forward passes before the graph capture", 3, type=int, minimum=0),
    )

    def __init__(self, path, **options: Any):
        super().__init__(path, **options)
        self.device_opt = self.options["device"]
        self.precision = self.options["precision"]
        self.cuda_graph = self.options["cuda_graph"]
        self.graph_batch = self.options["batch_size"]
        self.warmup = self.options["warmup"]
        if self.cuda_graph and self.graph_batch is None:
            raise ConfigError("torch backend: cuda_graph needs a fixed positive batch_size")
        self._graph = None
        self._scored = False  # the module returns (logits, ood_score): the card has an OOD gate
        self._preloaded: tuple[Any, Any] | None = None
        self._cudnn_benchmark: bool | None = None  # the process-wide flag as found, restored on close

    @classmethod
    def from_module(cls, model: Any, card: Any, path, **options: Any) -> "TorchBackend":
        """A backend over a module already in memory (``path``: the checkpoint it came from), so
        export's parity reference does not load a 590 MB AlexNet checkpoint a second time."""
        backend = cls(path, **options)
        backend._preloaded = (model, card)
        return backend

    def _load(self) -> None:
        if self._preloaded is None:
            super()._load()  # checks the checkpoint file, then _open()
        else:
            self._open()  # the module is in memory: no file to read

    @property
    def model(self) -> Any:
        """The loaded classifier (e.g. for Grad-CAM's hooks), without its OOD head."""
        if not self.loaded:
            raise RuntimeError("call load() first")
        return self._model.model if self._scored else self._model

    @property
    def gives_ood_score(self) -> bool:
        return self.loaded and self._scored

    def _open(self) -> None:
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailableError(
                f"{self.path}: the torch backend needs PyTorch ({e}); install bonedeploy[train] "
                "or export the checkpoint to ONNX"
            ) from e
        device = self._resolve_device(torch)
        # cuda_graph turns on the global torch.backends.cudnn.benchmark; other code in this
        # process (a training run, another backend) must get its own setting back on close().
        self._cudnn_benchmark = bool(torch.backends.cudnn.benchmark)
        self._torch = torch
        try:
            self._load_model(torch, device)
        except BaseException:
            self._restore_cudnn_benchmark()
            raise

    def _load_model(self, torch, device: str) -> None:
        from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
        from bonedeploy.models.ood import ScoredModel, scored_model

        if self._preloaded is not None:
            model, self._card = self._preloaded
        else:
            ckpt = load_checkpoint(self.path)
            self._card = card_from_checkpoint(ckpt, str(self.path))
            # with the card's OOD gate: its head and the checkpoint's fitted tensors
            model = scored_model(model_from_checkpoint(ckpt, str(self.path)), self._card, ckpt)
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self._model = model.to(device=device, dtype=self._dtype).eval()
        self._scored = isinstance(self._model, ScoredModel)
        if self._scored:
            self._model.float_head()  # scores overflow float16
        self._device = device
        if self.cuda_graph:
            self._capture_graph()

    def _resolve_device(self, torch) -> str:
        has_cuda = torch.cuda.is_available()
        device = ("cuda" if has_cuda else "cpu") if self.device_opt == "auto" else self.device_opt
        if device == "cuda" and not has_cuda:
            raise BackendUnavailableError(f"{self.path}: device=cuda requested but torch sees no CUDA GPU")
        if device == "cpu" and (self.precision == "fp16" or self.cuda_graph):
            wanted = "fp16" if self.precision == "fp16" else "cuda_graph"
            raise ConfigError(f"torch backend: {wanted} needs a CUDA device (resolved device: cpu); "
                              f"valid combinations: {VALID_COMBOS}")
        return device

    def _capture_graph(self) -> None:
        """Warm up on a side stream (cuDNN autotuning, allocator), then capture one replayable graph
        with static input/output buffers (the PyTorch CUDA-graphs recipe)."""
        torch = self._torch
        torch.backends.cudnn.benchmark = True  # one fixed shape: let cuDNN pick its fastest kernels
        shape = (self.graph_batch, *self.card.preprocess.input_shape)
        # float32 in and out; the fp16 casts are captured in the graph, so the copies are plain DMA
        # from/to pinned staging buffers (pageable memory would be staged by the driver).
        self._static_in = torch.zeros(shape, device=self._device, dtype=torch.float32)
        self._host_in = torch.zeros(shape, dtype=torch.float32).pin_memory()

        def forward():
            return tuple(o.float() for o in self._outputs(self._static_in.to(self._dtype)))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(max(self.warmup, 1)):
                forward()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self._graph):
            self._static_out = forward()
        self._host_out = tuple(torch.zeros(o.shape, dtype=torch.float32).pin_memory() for o in self._static_out)
        torch.cuda.synchronize()

    def _outputs(self, x) -> tuple:
        """(logits,) or (logits, ood_score): what the module returns, as a tuple."""
        out = self._model(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_scored(batch)[0]

    def _infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._graph is not None:
            outs = self._infer_graph(batch)
        else:
            torch = self._torch
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self._device, non_blocking=True).to(self._dtype)
                outs = [o.float().cpu().numpy() for o in self._outputs(x)]
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def _infer_graph(self, batch: np.ndarray) -> list[np.ndarray]:
        """Replay the captured graph chunk by chunk; the last partial chunk is zero-padded and sliced."""
        torch = self._torch
        size, parts = self.graph_batch, []
        for start in range(0, len(batch), size):
            chunk = torch.from_numpy(batch[start:start + size])
            n = len(chunk)
            self._host_in[:n].copy_(chunk)
            if n < size:
                self._host_in[n:].zero_()
            self._static_in.copy_(self._host_in, non_blocking=True)
            self._graph.replay()
            for host, static in zip(self._host_out, self._static_out):
                host.copy_(static, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            parts.append([host[:n].numpy().copy() for host in self._host_out])
        if not parts:
            empty = [np.zeros((0, len(self.card.classes)), np.float32)]
            return empty + ([np.zeros((0,), np.float32)] if self._scored else [])
        return [np.concatenate(p) for p in zip(*parts)]

    def synchronize(self) -> None:
        if self.loaded and self._device == "cuda":
            self._torch.cuda.synchronize()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=getattr(self, "_device", self.device_opt), precision=self.precision,
                 cuda_graph=self.cuda_graph, graph_batch=self.graph_batch if self.cuda_graph else None)
        if self.loaded and self._device == "cuda":
            d["gpu"] = self._torch.cuda.get_device_name()
        return d

    def _close(self) -> None:
        self._graph = self._static_in = self._static_out = self._host_in = self._host_out = None
        self._model = None
        self._restore_cudnn_benchmark()

    def _restore_cudnn_benchmark(self) -> None:
        if self._cudnn_benchmark is not None:
            self._torch.backends.cudnn.benchmark = self._cudnn_benchmark
            self._cudnn_benchmark = None
