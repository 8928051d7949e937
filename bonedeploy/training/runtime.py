"""Where and how the math runs: device, autocast precision, memory format, determinism."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from bonedeploy.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: Any  # torch.device
    precision: str  # "fp32" | "bf16"
    channels_last: bool
    deterministic: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """bf16 autocast for forward passes; a no-op for fp32."""
        import torch

        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        import torch

        name = torch.cuda.get_device_name(self.device) if self.is_cuda else "cpu"
        return {"device": str(self.device), "device_name": name, "precision": self.precision,
                "channels_last": self.channels_last, "deterministic": self.deterministic,
                "threads": torch.get_num_threads()}


def resolve_runtime(device: str, precision: str, channels_last: bool | None,
                    deterministic: bool) -> Runtime:
    """Pick the device and precision; ``cuda`` without a visible GPU is a one-line ConfigError."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        built = torch.version.cuda or "none"
        raise ConfigError(f"--device cuda: no CUDA GPU visible to torch {torch.__version__} "
                          f"(built for CUDA {built}); use --device cpu or --device auto")
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu")
    if precision == "auto":
        precision = "bf16" if _bf16_pays_off(torch, dev) and not deterministic else "fp32"
    if channels_last is None:
        channels_last = dev.type == "cuda"
    return Runtime(dev, precision, bool(channels_last), bool(deterministic))


def _bf16_pays_off(torch: Any, dev: Any) -> bool:
    """bf16 autocast where the hardware computes in bf16: CUDA GPUs that support it, and CPUs with
    native bf16 (AVX512_BF16/AMX), where oneDNN runs convolutions in bf16 instructions. On other
    CPUs oneDNN emulates bf16 and it is slower than fp32. ``benchmarks/train_epoch.py --precision
    bf16`` (and ``fp32``) measures the difference on a machine."""
    if dev.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    from bonedeploy.util.machine import native_bf16_cpu

    return native_bf16_cpu()


@contextlib.contextmanager
def configured(rt: Runtime):
    """Global torch switches for one run, restored afterwards (tests and sweeps share a process)."""
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_float32_matmul_precision(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        if rt.deterministic:
            # cuBLAS needs this before its first use to be reproducible.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        if rt.is_cuda:
            torch.backends.cudnn.benchmark = not rt.deterministic
            torch.backends.cudnn.deterministic = rt.deterministic
            if not rt.deterministic:  # TF32 matmuls: far below the seed's n=72 resolution
                torch.set_float32_matmul_precision("high")
        yield rt
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_float32_matmul_precision(saved[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]


def synchronize(rt: Runtime) -> None:
    if rt.is_cuda:
        import torch

        torch.cuda.synchronize(rt.device)
