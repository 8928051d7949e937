"""``TrainConfig``: every training option, its defaults from the model registry, its validation.

Fields left ``None`` mean "the registry entry's value" (the seed's hyper-parameters);
``resolve()`` fills them in so that the checkpoint records the values actually used.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bonedeploy.errors import ConfigError
from bonedeploy.eval.ood import DEFAULT_FPR as OOD_FPR
from bonedeploy.eval.ood import validate_fpr as validate_ood_fpr
from bonedeploy.util.defaults import none_means_default

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")

# Options a resumed run may change; any other explicit difference from last.pt is refused.
RESUME_MUTABLE = frozenset(
    {"epochs", "device", "precision", "channels_last", "quiet", "resume", "out", "data", "val",
     "workers", "save_every", "eval_batch_size", "overwrite", "deterministic", "eval_train", "ood_fpr"}
)


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class TrainConfig:
    model: str | None = None
    data: str | None = None  # image-folder root: DATA/<class>/*.png
    val: str | None = None  # a separate validation root; default: seeded 8:2 split of ``data``
    classes: tuple[str, ...] | None = None  # class folders; default: Fractured/Normal if present
    out: str | None = None  # default runs/<model>
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    dropout: float | None = None  # only for models that have dropout (AlexNet)
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    skip_bad: bool = False
    quiet: bool = False
    resume: str | None = None  # a run folder (or its last.pt)
    channels_last: bool | None = None  # default: on CUDA only
    deterministic: bool = False
    # Eval-mode pass over the training set after each epoch (the seed's train accuracy). Off: the
    # history keeps the training pass's own train-mode figures, which cost nothing; the report
    # still evaluates best.pt on the training set once.
    eval_train: bool = True
    precise_bn: bool = False  # re-estimate BatchNorm statistics on the train set before evaluating
    workers: int | None = None  # image-decoding processes (default: all cores)
    eval_batch_size: int | None = None
    save_every: float = 30.0  # seconds between checkpoint writes (the last epoch always writes)
    overwrite: bool = False
    # Share of in-distribution images the out-of-distribution gate may refuse (bonedeploy.eval.ood);
    # the threshold is set on the validation split at the end of the run.
    ood_fpr: float = OOD_FPR

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (it goes into checkpoints loaded with weights_only=True)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        valid = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in valid}
        if d.get("classes") is not None:
            d["classes"] = tuple(d["classes"])
        return cls(**d)

    def explicit(self) -> dict[str, Any]:
        """The options that differ from the dataclass defaults (what the user asked for)."""
        default = TrainConfig()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    def resolve(self) -> "TrainConfig":
        """Fill registry defaults and validate every value; raises ConfigError."""
        from bonedeploy.models import get_model_entry
        from bonedeploy.models.alexnet import SELECTED

        model = self.model or SELECTED
        entry = get_model_entry(model)  # ConfigError listing the models
        d = entry.defaults
        if self.dropout is not None and "dropout" not in entry.kwargs:
            with_dropout = [n for n in _models() if "dropout" in get_model_entry(n).kwargs]
            raise ConfigError(f"{model} has no dropout; --dropout applies to: {', '.join(with_dropout)}")
        cfg = self.replace(
            model=model,
            out=str(self.out) if self.out else str(Path("runs") / model),
            # absolute, so that `--resume` works from any working directory
            data=os.path.abspath(self.data) if self.data else None,
            val=os.path.abspath(self.val) if self.val else None,
            classes=tuple(self.classes) if self.classes else None,
            epochs=self.epochs if self.epochs is not None else d.epochs,
            lr=self.lr if self.lr is not None else d.lr,
            batch_size=self.batch_size if self.batch_size is not None else d.batch_size,
            weight_decay=self.weight_decay if self.weight_decay is not None else d.weight_decay,
            dropout=self.dropout if self.dropout is not None else entry.kwargs.get("dropout"),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _check(self.epochs is None or self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        _check(self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(self.batch_size is None or self.batch_size >= 1,
               f"--batch-size must be >= 1, got {self.batch_size}")
        _check(self.weight_decay is None or self.weight_decay >= 0,
               f"--weight-decay must be >= 0, got {self.weight_decay}")
        _check(self.dropout is None or 0 <= self.dropout < 1,
               f"--dropout must be in [0, 1), got {self.dropout}")
        _check(0 < self.val_fraction < 1, f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.workers is None or self.workers >= 1, f"--workers must be >= 1, got {self.workers}")
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1,
               f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        _check(self.save_every >= 0, f"--save-every must be >= 0 seconds, got {self.save_every}")
        validate_ood_fpr(self.ood_fpr)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """create_model overrides recorded in the checkpoint."""
        return {} if self.dropout is None else {"dropout": float(self.dropout)}


def _models() -> list[str]:
    from bonedeploy.models import list_models

    return list_models()


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"--{name} {value!r} is not valid; choose one of: {', '.join(valid)}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _plain(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        return v.item()
    return v
