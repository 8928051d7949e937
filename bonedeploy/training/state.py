"""What goes into best.pt / last.pt, and how a run is resumed from last.pt.

Everything stored is a tensor or a plain type, so both files load with
``torch.load(weights_only=True)`` (bonedeploy.artefacts.checkpoint.load_checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.checkpoint import load_checkpoint
from bonedeploy.errors import CheckpointError, ConfigError
from bonedeploy.training.config import RESUME_MUTABLE, TrainConfig

BEST, LAST = "best.pt", "last.pt"


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random stream the run draws from: torch CPU (init, dropout on CPU), CUDA (dropout
    on the GPU) and the batch-order/flip generator. numpy and ``random`` are not used."""
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # another machine: keep the stream of the device we train on reproducible
            torch.cuda.set_rng_state(cuda[0])


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (channels_last weights are stored in the default layout)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def versions() -> dict[str, Any]:
    from bonedeploy import __version__
    from bonedeploy.util.machine import git_commit

    return {"bonedeploy": str(__version__), "torch": str(torch.__version__),  # TorchVersion is a
            "cuda": torch.version.cuda, "git_commit": git_commit()}  # class: not weights_only-safe


def base_checkpoint(cfg: TrainConfig, card: ModelCard, split: dict[str, Any],
                    skipped_bad: list[dict[str, str]], runtime: dict[str, Any]) -> dict[str, Any]:
    """The fields best.pt and last.pt share (state_dict, epoch, metrics, history added later)."""
    return plain({
        "card": card.to_dict(),
        "model_kwargs": cfg.model_kwargs,
        "config": cfg.to_dict(),
        "split": split,
        "versions": versions(),
        "runtime": runtime,
        "skipped_bad": skipped_bad,
    })


def plain(obj: Any) -> Any:
    """Exact builtin types (str subclasses, Paths, numpy scalars -> str/float/int), recursively,
    so that ``torch.load(weights_only=True)`` accepts the file."""
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return str(obj)


def find_last(resume: str | Path) -> Path:
    p = Path(resume)
    last = p / LAST if p.is_dir() or p.suffix != ".pt" else p
    if not last.is_file():
        raise CheckpointError(f"--resume {resume}: no {LAST} there (nothing to resume; "
                              f"start a new run without --resume)")
    return last


def merge_resume(cfg: TrainConfig, stored: dict[str, Any], where: Path) -> TrainConfig:
    """The stored run's config with the options a resume may change; refuses any other change."""
    old = TrainConfig.from_dict(stored)
    asked = cfg.explicit()
    clashes = [(k, getattr(old, k), v) for k, v in asked.items()
               if k not in RESUME_MUTABLE and getattr(old, k) != v]
    if clashes:
        what = "; ".join(f"--{k.replace('_', '-')} was {a!r}, now {b!r}" for k, a, b in clashes)
        raise ConfigError(f"cannot resume {where}: {what}. A resumed run keeps its settings; "
                          f"start a new run with another --out instead")
    keep = {k: v for k, v in asked.items() if k in RESUME_MUTABLE}
    # device/precision/memory format: "auto" again on the machine we resume on, unless asked for
    keep.update(resume=str(where), out=str(where.parent), device=cfg.device,
                precision=cfg.precision, channels_last=cfg.channels_last)
    return old.replace(**keep)


def check_same_data(stored_split: dict[str, Any], split: dict[str, Any], where: Path) -> None:
    """Refuse to resume on other images: compare the manifests' (path, label, sha256)."""
    def entries(s: dict[str, Any], part: str) -> set[tuple[str, int, str]]:
        return {(str(e["path"]), int(e["label"]), str(e.get("sha256"))) for e in s.get(part, [])}

    for part in ("train", "val"):
        old, new = entries(stored_split, part), entries(split, part)
        if old != new:
            gone, added = sorted(old - new), sorted(new - old)
            example = (gone or added)[0][0]
            raise ConfigError(
                f"cannot resume {where}: the {part} images differ from the run's "
                f"({len(gone)} missing or changed, {len(added)} new or changed, e.g. {example}); "
                f"resume only on the same data, or start a new run with another --out")
    if list(stored_split.get("classes", [])) != list(split.get("classes", [])):
        raise ConfigError(f"cannot resume {where}: classes {stored_split.get('classes')} "
                          f"became {split.get('classes')}")


def load_last(path: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    for key in ("optimizer", "rng", "epoch", "history", "config", "split"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: not a resumable last.pt (no '{key}')")
    return ckpt
