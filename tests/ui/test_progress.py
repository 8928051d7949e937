"""The progress protocol: rich bars on a terminal, nothing in logs, pipes or ``--quiet``."""

import io
import time

from rich.console import Console

from bonedeploy.training.progress import LineReporter, RichReporter
from bonedeploy.ui.progress import Progress, RichBar, RichBars, progress_bar

REC = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.75, "val_loss": 0.6, "val_acc": 0.7, "seconds": 1.0}


def terminal(width=160):
    return Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)


def test_no_bar_where_it_would_be_log_garbage():
    log = Console(file=io.StringIO())  # a file: not a terminal
    quiet = Console(file=io.StringIO(), force_terminal=True, quiet=True)
    for console in (log, quiet):
        bar = progress_bar(console, unit="img")
        assert type(bar) is Progress
        with bar:
            bar.start("infer", total=3)
            bar.advance()
            bar.update(3, note="1 failed")
        assert console.file.getvalue() == ""


def test_a_terminal_bar_shows_count_note_and_rich_speed():
    console = terminal()
    bar = progress_bar(console, unit="img")
    assert isinstance(bar, RichBar)
    with bar:
        bar.start("infer", total=10, done=2)  # two resumed images
        for done in range(3, 11):
            time.sleep(0.01)
            bar.update(done, note="1 failed" if done > 5 else "")
    out = console.file.getvalue()
    assert "infer" in out and "10/10" in out and "1 failed" in out and "img/s" in out


def test_starting_again_resets_the_bar():
    console = terminal()
    bars = RichBars(console)
    bar = bars.bar()
    bar.start("batches", total=4)
    bar.advance(4)
    bar.start("batches", total=4)
    bar.advance(1)
    (task,) = bars._display.tasks
    assert (task.completed, task.total) == (1, 4)
    bars.close()


def test_rich_reporter_draws_bars_on_a_terminal_only():
    console = terminal()
    rep = RichReporter(console)
    decode = rep.decode_progress()
    decode.start("decoding images", total=5)
    decode.advance(5)
    rep.start("tiny", 1, 1, batches=3)
    rep.batch(3)
    rep.epoch(REC, 1, REC)
    rep.close()
    out = console.file.getvalue()
    assert "decoding images" in out and "5/5" in out and "epoch 1/1" in out and "best 0.700@1" in out

    log = Console(file=io.StringIO(), width=200)
    rep = RichReporter(log)
    assert type(rep.decode_progress()) is Progress
    rep.start("tiny", 1, 1, batches=3)
    rep.epoch(REC, 1, REC)
    rep.close()
    assert log.file.getvalue().splitlines() == [
        "epoch 1/1  train loss 0.5000 acc 0.7500  val loss 0.6000 acc 0.7000  best 0.7000@1  1.00s *"]


def test_quiet_reporter_prints_lines_and_no_bar():
    stream = io.StringIO()
    rep = LineReporter(stream)
    assert type(rep.decode_progress()) is Progress
    rep.epoch(REC, 1, None)
    assert stream.getvalue().startswith("epoch 1/1  train loss 0.5000")
