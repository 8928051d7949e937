"""Host and GPU memory high-water marks per artefact, without new dependencies.

``getrusage`` only ever grows over the life of a process, so on Linux we reset the kernel's
high-water mark (``/proc/self/clear_refs`` = 5, Linux >= 4.0) before each artefact and read
``VmHWM`` afterwards; elsewhere the process-wide peak is reported and marked as such.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str, pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the peak-RSS counter to the current RSS; False where the OS cannot."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (since the last reset where supported)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def peak_rss_mb_of(pid: int) -> float:
    """Another process's peak RSS in MiB so far (``VmHWM``), 0.0 once it is gone or off Linux;
    polled, because ``wait4``'s ``ru_maxrss`` would count the pages of the parent that forked it."""
    kb = _status_kb("VmHWM", pid)
    return kb / 1024 if kb is not None else 0.0


def reset_peak_gpu() -> None:
    """Reset torch's CUDA allocator peak when torch is already imported and CUDA is in use."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_mb() -> float | None:
    """Peak memory allocated through torch's CUDA allocator (torch backends), else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20
