"""The sweep as a queue over devices (``--devices``): one run per device at a time, a failed run
recorded while the rest go on, each run's log apart, and the same results table.

There is no GPU here. ``test_the_queue_*`` use a stand-in for the training process (a short
Python process that records the CUDA_VISIBLE_DEVICES it was given): they test our queue glue
only, never a GPU. ``test_a_queued_sweep_*`` runs the real worker, training on the CPU."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
import sweepkit  # noqa: E402
from trainkit import make_folder, register_tiny  # noqa: E402

from bonedeploy.errors import ConfigError  # noqa: E402
from bonedeploy.training import sweep_queue as sq  # noqa: E402
from bonedeploy.training.results import RESULT_COLUMNS  # noqa: E402
from bonedeploy.training.sweep import SweepConfig, run_sweep  # noqa: E402

MODEL = register_tiny()

STAND_IN = textwrap.dedent("""
    import json, os, sys, time
    job = json.load(open(sys.argv[1]))
    cfg = job["config"]
    with open(cfg["trace"], "a") as f:
        f.write(json.dumps({"name": job["name"], "device": os.environ["CUDA_VISIBLE_DEVICES"],
                            "start": time.time()}) + "\\n")
    print("training", job["name"], flush=True)
    time.sleep(cfg["sleep"])
    with open(cfg["trace"], "a") as f:
        f.write(json.dumps({"name": job["name"], "end": time.time()}) + "\\n")
    if cfg["exit"]:
        print("error: boom in", job["name"], flush=True)
    sys.exit(cfg["exit"])
""")


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(sq, "worker_argv", lambda job_file: [sys.executable, str(script), str(job_file)])
    return tmp_path / "trace.jsonl"


def jobs(tmp_path, trace, exits, sleep=0.6):
    return [sq.Job(f"r{i}", {"trace": str(trace), "sleep": sleep, "exit": code}, tmp_path / "runs" / f"r{i}")
            for i, code in enumerate(exits)]


def spans(trace: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec.pop("name"), {}).update(rec)
    return out


def test_the_queue_runs_one_job_per_device_at_a_time_and_keeps_going_after_a_failure(tmp_path, stand_in):
    said: list[str] = []
    outcomes = sq.run_queue(jobs(tmp_path, stand_in, [0, 1, 0, 0, 0]), ["0", "1"], log=said.append)
    assert [(o.name, o.status) for o in outcomes] == [("r0", "done"), ("r1", "failed"), ("r2", "done"),
                                                     ("r3", "done"), ("r4", "done")]
    assert outcomes[1].exit_code == 1 and outcomes[1].last_line == "error: boom in r1"
    run = spans(stand_in)
    assert set(run) == {"r0", "r1", "r2", "r3", "r4"} and {r["device"] for r in run.values()} == {"0", "1"}
    for device in ("0", "1"):
        mine = sorted((r["start"], r["end"]) for r in run.values() if r["device"] == device)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(mine, mine[1:])), f"device {device} overlapped"
    assert max(sum(r["start"] <= t < r["end"] for r in run.values()) for t in [r["start"] for r in run.values()]) == 2
    for o in outcomes:  # each run's output in its own log, with the device it was given
        text = o.log.read_text()
        assert f"training {o.name}" in text and f"CUDA_VISIBLE_DEVICES={o.device}" in text
        assert not [n for n in run if n != o.name and f"training {n}" in text]
    assert any("r1: FAILED on device" in s and "boom" in s for s in said)


def test_the_queue_stops_every_running_job_on_ctrl_c(tmp_path, stand_in):
    started = []

    def start(job, device):
        started.append(sq.launch(job, device))
        return started[-1]

    def log(line):
        if len(started) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, with both devices busy

    with pytest.raises(KeyboardInterrupt):
        sq.run_queue(jobs(tmp_path, stand_in, [0, 0, 0], sleep=30), ["0", "1"], start=start, log=log)
    assert len(started) == 2 and all(p.poll() is not None for p in started)


@pytest.mark.parametrize("text, expected", [("0,1, 2", ("0", "1", "2")), ("cpu", ("cpu",)), (None, None),
                                            ("GPU-5f2c,GPU-77aa", ("GPU-5f2c", "GPU-77aa"))])
def test_devices_parse(text, expected):
    assert sq.parse_devices(text) == expected


@pytest.mark.parametrize("text, match", [("cpu,0", "not both"), ("0,1,0", "0 given twice"), (" , ", "expected cpu")])
def test_bad_devices_are_refused(text, match):
    with pytest.raises(ConfigError, match=match):
        sq.parse_devices(text)


RECIPE = f"""
[defaults]
batch_size = 4
model = "{MODEL}"

[[run]]
name = "a"

[[run]]
name = "toobig"
batch_size = 64

[[run]]
name = "b"
lr = 3e-3
"""


@pytest.mark.slow
def test_a_queued_sweep_records_the_failed_run_and_writes_todays_table(tmp_path, monkeypatch):
    monkeypatch.setattr(sq, "worker_argv", sweepkit.worker_argv)
    data = make_folder(tmp_path / "data", per_class=8)
    (tmp_path / "r.toml").write_text(RECIPE)
    out = tmp_path / "runs"
    said: list[str] = []
    res = run_sweep(SweepConfig(str(tmp_path / "r.toml"), str(data), out=str(out), epochs=1, workers=1,
                                devices=("0", "1")), log=said.append)
    assert res.statuses == {"a": "new", "toobig": "failed", "b": "new"} and res.exit_code == 3
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["name"], r["status"]) for r in rows] == [("a", "done"), ("toobig", "failed"), ("b", "done")]
    assert tuple(rows[0]) == RESULT_COLUMNS  # today's columns
    assert float(rows[0]["val_ci_low"]) <= float(rows[0]["val_acc"]) <= float(rows[0]["val_ci_high"])
    md = (out / "results.md").read_text()
    assert "| Model | Hyper parameters | Epochs (saved ep) |" in md
    assert "(failed, exit 1: error: " in md and "fewer than the batch size 64" in md
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["failed"]["toobig"]["log"] == str(out / "toobig" / "train.log")
    for name in ("a", "b"):
        log = (out / name / "train.log").read_text()
        assert "epoch 1/1" in log and f"done: {out / name / 'best.pt'}" in log
    assert "epoch" not in (out / "toobig" / "train.log").read_text()
    # finished runs are skipped by the next invocation; the failed one is tried again
    again = run_sweep(SweepConfig(str(tmp_path / "r.toml"), str(data), out=str(out), epochs=1, workers=1,
                                  devices=("0",), only=("a",)))
    assert again.statuses == {"a": "done"} and again.exit_code == 0


def test_a_queue_on_the_cpu_is_refused(tmp_path):
    (tmp_path / "r.toml").write_text(RECIPE)
    with pytest.raises(ConfigError, match="--device cpu"):
        run_sweep(SweepConfig(str(tmp_path / "r.toml"), str(tmp_path), device="cpu", devices=("0",)))


def test_a_sweep_under_torchrun_is_refused(tmp_path, monkeypatch):
    (tmp_path / "r.toml").write_text(RECIPE)
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="does not run under torchrun.*--devices"):
        run_sweep(SweepConfig(str(tmp_path / "r.toml"), str(tmp_path)))
