"""DDP under torchrun, on the CPU with gloo and 2 processes that each test starts (bounded in time):
one step equals one step on the whole batch, a run writes one best.pt that export accepts, and a
worker killed with SIGKILL under --max-restarts 1 costs at most the epoch in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import ddpkit  # noqa: E402
from trainkit import make_folder, register_tiny_slow  # noqa: E402

from bonedeploy.artefacts.checkpoint import load_checkpoint  # noqa: E402
from bonedeploy.errors import ConfigError  # noqa: E402
from bonedeploy.training import TrainConfig  # noqa: E402
from bonedeploy.training import ddp as dd  # noqa: E402
from bonedeploy.training.ddp_loop import epoch_flips, rank_indices  # noqa: E402

MODEL = register_tiny_slow()
EPOCHS = 6


def job(rank: int, world: int = 2, **kw) -> dd.Ddp:
    return dd.Ddp(rank, world, rank, world, "gloo", **kw)


# --- in-process: the pieces every rank computes alike --------------------------------------------
def test_global_batch_k_is_the_permutations_kth_slice_cut_between_ranks():
    n, world, per_rank = 11, 2, 2
    parts = [rank_indices(n, job(r), seed=3, epoch=5) for r in range(world)]
    assert len(parts[0]) == len(parts[1]) == 6  # padded to equal length: equal step counts
    one = rank_indices(n, job(0, world=1), seed=3, epoch=5)
    assert sorted(one.tolist()) == list(range(n))
    for k in range(3):
        together = sorted(parts[0][k * per_rank:(k + 1) * per_rank].tolist()
                          + parts[1][k * per_rank:(k + 1) * per_rank].tolist())
        assert together == sorted(one[k * 4:(k + 1) * 4].tolist() + one[:max(0, (k + 1) * 4 - n)].tolist())
    assert not torch.equal(rank_indices(n, job(0), 3, 6), parts[0])  # another epoch, another order


def test_flips_are_per_image_and_the_same_on_every_rank():
    a, b = epoch_flips(50, 0.5, seed=1, epoch=2), epoch_flips(50, 0.5, seed=1, epoch=2)
    assert torch.equal(a, b) and 10 < int(a.sum()) < 40
    assert not torch.equal(a, epoch_flips(50, 0.5, seed=1, epoch=3))


def test_the_global_batch_must_divide_by_the_world_size():
    assert dd.per_rank_batch(32, 4) == 8
    with pytest.raises(ConfigError, match=r"--batch-size 30 is not divisible by the world size 4.*use 28 or 32"):
        dd.per_rank_batch(30, 4)


def test_torchrun_is_recognised_by_its_whole_environment_only():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert dd.launched_by_torchrun(env)
    assert not dd.launched_by_torchrun({**env, "MASTER_PORT": ""})
    got = dd.from_env("cpu", {**env, "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RESTART_COUNT": "1",
                              "TORCHELASTIC_RUN_ID": "job7"})
    assert got == dd.Ddp(1, 2, 1, 2, "gloo", 1, "job7") and not got.is_main
    assert dd.from_env("cpu", {}) is None
    assert dd.pick_backend("auto", has_cuda=True) == "nccl" and dd.pick_backend("cpu", has_cuda=True) == "gloo"


def test_a_relaunched_job_resumes_only_its_own_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"x")
    cfg = TrainConfig(model=MODEL, data="d", out=str(out))
    (out / "metrics.json").write_text(json.dumps({"runtime": {"distributed": {"run_id": "job7"}}}))
    assert dd.restart_resume(cfg, job(0, restart=1, run_id="job7")).resume == str(out)
    assert dd.restart_resume(cfg, job(0, restart=0, run_id="job7")).resume is None  # first attempt
    assert dd.restart_resume(cfg, job(0, restart=1, run_id="other")).resume is None  # an older job's run
    assert dd.restart_resume(cfg, None) is cfg


def test_gloo_sync_batchnorm_keeps_the_batchnorm_state_dict():
    from trainkit import build_tiny

    from bonedeploy.training.syncbn import GlooSyncBatchNorm, convert

    plain = build_tiny(dropout=0.0)
    synced = convert(build_tiny(dropout=0.0), cuda=False)
    assert any(isinstance(m, GlooSyncBatchNorm) for m in synced.modules())
    plain.load_state_dict(synced.state_dict())  # best.pt loads into the model export builds
    x = torch.randn(4, 1, 64, 64)
    synced.train()
    plain.train()
    assert torch.allclose(synced(x), plain(x), atol=1e-6)  # one process: plain BatchNorm


# --- 2 processes under torchrun ------------------------------------------------------------------
@pytest.mark.slow
def test_one_ddp_step_on_two_half_batches_equals_one_step_on_the_whole_batch(tmp_path):
    out = tmp_path / "step.json"
    assert ddpkit.torchrun("step", out, log=tmp_path / "log", timeout=240) == 0, (tmp_path / "log").read_text()[-3000:]
    r = json.loads(out.read_text())
    for name in ("syncbn", "no_bn"):
        assert r[name]["grad_norm"] > 0.1 and r[name]["same_keys"]
        assert max(r[name]["grad"], r[name]["param"], r[name]["buffer"]) < 1e-5, (name, r[name])
    # the comparison sees a difference: BatchNorm left per rank normalises each half on its own
    assert r["plain_bn"]["grad"] > 1e-3, r["plain_bn"]


@pytest.mark.slow
def test_a_refusal_on_rank_0_or_a_different_split_stops_every_rank(tmp_path):
    assert ddpkit.torchrun("refusals", tmp_path, log=tmp_path / "log", timeout=240) == 0, \
        (tmp_path / "log").read_text()[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["ok"] == r1["ok"] == {"decided_by": 0}  # rank 0 decided, every rank has its answer
    assert r0["refused"] == ["ConfigError", "runs/x already holds a run", 1]
    assert r1["refused"] == ["RankZeroError", "rank 0: runs/x already holds a run", 1]
    assert r0["split"] == r1["split"] and r0["split"].startswith("ranks [1] decoded another train/val split")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("ddpdata"), per_class=10)


def train_args(data: Path, out: Path) -> list[str]:
    return [str(data), "--model", MODEL, "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", "4",
            "--lr", "0.01", "--device", "cpu", "--deterministic", "--workers", "1"]


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ddprun")
    log = base / "log"
    assert ddpkit.torchrun("train", *train_args(data, base / "run"), log=log, timeout=300) == 0, \
        log.read_text()[-3000:]
    return base / "run"


@pytest.mark.slow
def test_a_two_process_run_writes_one_best_pt_that_export_accepts(ddp_run, data, tmp_path, capsys):
    from bonedeploy.cli.app import main
    from bonedeploy.training.dataset import build_split

    assert sorted(p.name for p in ddp_run.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert not [p for p in ddp_run.iterdir() if p.name.endswith(".tmp")]
    best = load_checkpoint(ddp_run / "best.pt")
    assert best["card"]["extra"]["distributed"] == {"world_size": 2, "backend": "gloo", "nodes": 1,
                                                    "local_world_size": 2}
    assert best["runtime"]["distributed"]["world_size"] == 2
    assert best["config"]["batch_size"] == 4  # the global batch, as the recipe says
    # the split rank 0 made and broadcast is the one a single process makes of the same folder
    single = build_split(TrainConfig(model=MODEL, data=str(data)).resolve()).to_dict()
    assert best["split"]["train"] == single["train"] and best["split"]["val"] == single["val"]
    history = json.loads((ddp_run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert best["epoch"] == max(history, key=lambda h: (h["val_acc"], -h["val_loss"]))["epoch"]
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(ddp_run / "best.pt"), "--out", str(tmp_path / "exp"), "--precision", "fp32"])
    assert exit_.value.code in (0, None), capsys.readouterr().out
    assert (tmp_path / "exp" / "model.onnx").is_file()


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_at_most_the_epoch_in_flight(ddp_run, data, tmp_path):
    pids, out, log = tmp_path / "pids", tmp_path / "run", tmp_path / "log"
    pids.mkdir()
    proc = ddpkit.start("train", *train_args(data, out), log=log, max_restarts=1, DDPKIT_PID_DIR=str(pids))
    done_at_kill = wait_for_epoch(out / "metrics.json", 2, proc, log)
    os.kill(int((pids / "rank1.pid").read_text()), signal.SIGKILL)
    assert ddpkit.finish(proc, 300, log) == 0, log.read_text()[-3000:]
    text = log.read_text()
    resumed = [int(m) for m in re.findall(r"resuming \S+ after epoch (\d+)", text)]
    assert len(resumed) == 1 and resumed[0] >= done_at_kill, (resumed, done_at_kill, text[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))  # none twice, none missing
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert last["epoch"] == EPOCHS and last["history"] == history and best["epoch"] == metrics["best_epoch"]
    assert best["split"] == load_checkpoint(ddp_run / "best.pt")["split"]
    # the epochs replayed after the restart are the ones an uninterrupted run trained
    reference = json.loads((ddp_run / "metrics.json").read_text())["history"]
    keys = ("train_loss", "val_loss", "val_acc", "fit_loss")
    assert [h[k] for h in history for k in keys] == pytest.approx([h[k] for h in reference for k in keys],
                                                                   abs=1e-6)
    assert (out / "report.json").is_file()


def wait_for_epoch(metrics: Path, epoch: int, proc, log: Path, timeout: float = 200) -> int:
    """Completed epochs once metrics.json shows at least ``epoch`` of them (the run still going)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"torchrun ended before epoch {epoch}:\n{log.read_text()[-3000:]}"
        try:
            done = json.loads(metrics.read_text())["completed_epochs"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= epoch:
            assert done < EPOCHS, "the run finished before the kill: make its epochs slower"
            return done
        time.sleep(0.05)
    ddpkit.finish(proc, 0.1, log)
    raise AssertionError("no epoch finished in time")
