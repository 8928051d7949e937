"""Training: ``train(TrainConfig)`` fits one seed variant on in-memory data and leaves a
self-describing run folder (best.pt, last.pt, metrics.json, curves.png, report.md/json).

Importing this package imports torch (it is the ``[train]`` extra); command modules import it
inside their function.
"""

from bonedeploy.training.config import DEVICES, PRECISIONS, TrainConfig
from bonedeploy.training.fit import RUN_FILES, TrainResult, is_better, train
from bonedeploy.training.loop import EvalResult, evaluate, flip_where, train_epoch
from bonedeploy.training.progress import LineReporter, QuietReporter, Reporter, RichReporter
from bonedeploy.training.runtime import Runtime, resolve_runtime

__all__ = [
    "DEVICES", "PRECISIONS", "RUN_FILES", "EvalResult", "LineReporter", "QuietReporter", "Reporter",
    "RichReporter",
    "Runtime", "TrainConfig", "TrainResult", "evaluate", "flip_where", "is_better",
    "resolve_runtime", "train", "train_epoch",
]
