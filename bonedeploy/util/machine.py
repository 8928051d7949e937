"""Facts about this machine and the library versions, recorded beside every measured number."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from bonedeploy import __version__

_LIBS = ("numpy", "pillow", "onnxruntime", "onnx", "onnxconverter-common", "torch", "torchvision",
         "tensorrt", "cuda-python", "scikit-learn")


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line as typed (``shlex.join(sys.argv)``): what run records store."""
    return shlex.join(sys.argv if argv is None else argv)


def library_versions(names: tuple[str, ...] = _LIBS) -> dict[str, str | None]:
    # Imported here: importlib.metadata costs ~25 ms, and the prediction path never records versions.
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"bonedeploy": __version__, "python": platform.python_version()}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16_cpu() -> bool:
    """Bfloat16 dot products in hardware (AVX512_BF16: AMD Zen 4+, Intel Cooper Lake; AMX: Intel
    Sapphire Rapids+). Without them oneDNN emulates bf16 and autocast is slower than fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def gpu_info() -> dict[str, Any] | None:
    """GPU name/driver via nvidia-smi when present; never imports torch."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, driver, mem, cc = [s.strip() for s in out[0].split(",")]
    return {"name": name, "driver": driver, "memory": mem, "compute_capability": cc, "count": len(out)}


def git_commit(path: str | Path | None = None) -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=path or Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's limit), else
    every core the OS reports; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": gpu_info(),
        "versions": library_versions(),
        "git_commit": git_commit(),
    }


def machine_slug(info: dict[str, Any] | None = None) -> str:
    """A file-name-safe machine name, e.g. ``cpu-xeon-2core`` or ``gpu-nvidia-h100``."""
    info = info or machine_info()
    if info.get("gpu"):
        base = "gpu-" + info["gpu"]["name"]
    else:
        words = re.findall(r"[A-Za-z]+", info.get("cpu") or "cpu")
        vendor = next((w for w in words if w.lower() in {"xeon", "epyc", "ryzen", "core", "graviton", "neoverse"}), None)
        base = f"cpu-{(vendor or (words[0] if words else 'cpu'))}-{info.get('cores') or 0}core"
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
