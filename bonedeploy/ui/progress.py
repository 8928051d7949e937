"""One progress protocol for every long step (decoding, training, inference).

Code that does the work takes a ``Progress`` and calls ``start`` / ``advance`` or ``update``;
what the user sees is decided by whoever created it:

- ``Progress()`` itself does nothing: library callers, tests, ``--quiet``, logs and pipes.
- ``RichBars(console).bar()``: one bar of a live rich display; a display holds several bars
  (training: decode, epochs, batches). Speed, elapsed and remaining time are rich's own.
- ``progress_bar(console)``: a single bar with its own display, or the no-op where a bar would
  only be noise (a quiet console, or one that is not a terminal).
"""

from __future__ import annotations

from typing import Any


class Progress:
    """A task's progress. This base is the no-op; subclasses show it.

    ``start`` (again) resets the task: a new description, total and starting count (``done``, e.g.
    images already done by a resumed run: they do not count towards the speed)."""

    def start(self, description: str, total: int | None = None, done: int = 0) -> None:
        pass

    def update(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """Set the count (and the total, and a short note shown beside the bar) when known."""

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RichBars:
    """A live rich display of bars on ``console`` (stderr by default); close it when done."""

    def __init__(self, console: Any = None, transient: bool = False):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Display, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = console if console is not None else Console(stderr=True)
        self._display = Display(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                _speed_column(), TextColumn("{task.fields[note]}"),
                                TimeElapsedColumn(), TimeRemainingColumn(),
                                console=self.console, transient=transient)
        self._started = False

    def bar(self, unit: str = "it") -> "RichBar":
        """A new bar, hidden until its ``start``; ``unit`` names what it counts (images/s)."""
        return RichBar(self, unit)

    def print(self, text: str) -> None:
        """A line above the bars (plain: no markup or highlighting)."""
        self.console.print(text, highlight=False, markup=False)

    def _ensure(self):
        if not self._started:
            self._display.start()
            self._started = True
        return self._display

    def close(self) -> None:
        if self._started:
            self._display.stop()
            self._started = False


class RichBar(Progress):
    def __init__(self, bars: RichBars, unit: str = "it", owns_display: bool = False):
        self._bars, self._unit, self._owns = bars, unit, owns_display
        self._task = None

    def start(self, description: str, total: int | None = None, done: int = 0) -> None:
        display = self._bars._ensure()
        if self._task is None:
            self._task = display.add_task(description, total=total, completed=done,
                                          unit=self._unit, note="")
        else:  # reset clears rich's speed samples: a new pass is timed afresh
            display.reset(self._task, total=total, completed=done, description=description, note="")

    def update(self, done: int, total: int | None = None, note: str | None = None) -> None:
        if self._task is None:
            self.start("", total)
        fields: dict[str, Any] = {"completed": done}
        if total is not None:
            fields["total"] = total
        if note is not None:
            fields["note"] = note
        self._bars._display.update(self._task, **fields)

    def advance(self, n: int = 1) -> None:
        if self._task is None:
            self.start("")
        self._bars._display.advance(self._task, n)

    def close(self) -> None:
        if self._owns:
            self._bars.close()


def progress_bar(console: Any = None, unit: str = "it", transient: bool = False) -> Progress:
    """A single rich bar on ``console`` (stderr by default), or the no-op when the console is
    quiet or not a terminal (a log file would get a frozen bar and control codes)."""
    from rich.console import Console

    console = console if console is not None else Console(stderr=True)
    if console.quiet or not console.is_terminal:
        return Progress()
    return RichBar(RichBars(console, transient), unit, owns_display=True)


def _speed_column():
    """Rich's own speed estimate (``task.speed``, over its recent samples) in the bar's unit."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            text = "" if speed is None else f"{speed:.1f} {task.fields.get('unit', 'it')}/s"
            return Text(text, style="progress.data.speed")

    return SpeedColumn()
