"""How a run reports itself: rich live progress, one plain line per epoch (``--quiet``), or nothing.

The trainer only calls these hooks; it never prints.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


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

    def decode_progress(self, what: str, total: int):
        """A callback for the image decoder (``advance(n)``), or None."""
        return None

    def start(self, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch(self, done: int) -> None:
        pass

    def epoch(self, rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> None:
        pass

    def close(self) -> None:
        pass


class LineReporter(Reporter):
    """``--quiet``: one line per epoch, flushed, for logs."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def epoch(self, rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> None:
        print(epoch_line(rec, epochs, best), file=self.stream, flush=True)


class RichReporter(Reporter):
    """Live bars for epochs and batches; each finished epoch is also printed above the bars."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self.progress = None

    def _ensure(self):
        if self.progress is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
        return self.progress

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def decode_progress(self, what: str, total: int):
        p = self._ensure()
        task = p.add_task(f"decoding {what}", total=total)

        def advance(n: int = 1) -> None:
            p.advance(task, n)
        return advance

    def start(self, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        p = self._ensure()
        self._epochs = p.add_task(f"{model}", total=epochs, completed=first_epoch - 1)
        self._batches = p.add_task("  batches", total=batches)

    def batch(self, done: int) -> None:
        self.progress.update(self._batches, completed=done)

    def epoch(self, rec: dict[str, Any], epochs: int, best: dict[str, Any] | None) -> None:
        p = self.progress
        p.console.print(epoch_line(rec, epochs, best), highlight=False)
        live = (f"train {rec['train_acc']:.3f}/{rec['train_loss']:.3f}  "
                f"val {rec['val_acc']:.3f}/{rec['val_loss']:.3f}")
        if best:
            live += f"  best {best['val_acc']:.3f}@{best['epoch']}"
        p.update(self._epochs, completed=rec["epoch"], description=live)
        if rec["epoch"] < epochs:
            p.update(self._batches, completed=0)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
