"""How a run reports itself: rich live progress, one plain line per epoch (logs), only its
warnings (``--quiet``), or nothing.

The trainer only calls these hooks; it never prints. Bars go through ``bonedeploy.ui.progress``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from bonedeploy.ui.progress import Progress, RichBars


def epoch_line(rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> str:
    """One epoch as a log line (the seed printed the same four numbers)."""
    mark = " *" if best and best.get("epoch") == rec["epoch"] else ""
    best_s = f"best {best['val_acc']:.4f}@{best['epoch']}" if best else ""
    return (f"epoch {rec['epoch']:>{len(str(epochs))}}/{epochs}  "
            f"train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f}  "
            f"val loss {rec['val_loss']:.4f} acc {rec['val_acc']:.4f}  "
            f"{best_s}  {rec['seconds']:.2f}s{mark}")


class Reporter:
    """Silent base: library callers and tests get no output."""

    def message(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        """Something the user must see even with ``--quiet`` (e.g. a calibration not fitted)."""
        self.message(f"warning: {text}")

    def decode_progress(self) -> Progress:
        """Where the image decoder reports (``bonedeploy.ui.progress``); the no-op here."""
        return Progress()

    def start(self, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch(self, done: int) -> None:
        pass

    def epoch(self, rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> None:
        pass

    def close(self) -> None:
        pass


class QuietReporter(Reporter):
    """``--quiet``: the warnings only (on stdout, where the other reporters print them too)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=self.stream, flush=True)


class LineReporter(Reporter):
    """One line per epoch, flushed, for logs; no bar."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def epoch(self, rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> None:
        print(epoch_line(rec, epochs, best), file=self.stream, flush=True)


class RichReporter(Reporter):
    """Live bars for decoding, epochs and batches (on a terminal only: a log gets the lines);
    each finished epoch is also printed above the bars."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self.bars = RichBars(self.console) if self.console.is_terminal else None
        self._epochs = self._batches = Progress()
        self._batches_total = 0

    def _bar(self) -> Progress:
        return self.bars.bar() if self.bars is not None else Progress()

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)  # a log line is never re-wrapped

    def decode_progress(self) -> Progress:
        return self._bar()

    def start(self, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        self._epochs, self._batches, self._batches_total = self._bar(), self._bar(), batches
        self._epochs.start(model, total=epochs, done=first_epoch - 1)
        self._batches.start("  batches", total=batches)

    def batch(self, done: int) -> None:
        self._batches.update(done)

    def epoch(self, rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> None:
        self.console.print(epoch_line(rec, epochs, best), highlight=False, soft_wrap=True)
        live = (f"train {rec['train_acc']:.3f}/{rec['train_loss']:.3f}  "
                f"val {rec['val_acc']:.3f}/{rec['val_loss']:.3f}")
        if best:
            live += f"  best {best['val_acc']:.3f}@{best['epoch']}"
        self._epochs.update(rec["epoch"], note=live)
        if rec["epoch"] < epochs:
            self._batches.start("  batches", total=self._batches_total)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.close()
