"""DDP test kit: start torchrun from a test, and the worker entry points torchrun runs.

``torchrun(...)`` runs this file as the worker script (``python -m torch.distributed.run
--standalone``: rendezvous on a free loopback port), bounded by a timeout, its whole process
group killed when it overruns. The workers register the tiny test models (they exist only in
tests) and then run ``bonedeploy train`` (``train ARGS``), compare one DDP step with one
single-process step (``step OUT.json``), or check how a refusal reaches every rank (``refusals DIR``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def worker_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1", **extra}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a test run inside a torchrun job must not look like a worker
    return env


def torchrun_argv(*args: str, nproc: int = 2, max_restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "--monitor-interval=0.2", __file__, *map(str, args)]


def start(*args: str, log: Path, nproc: int = 2, max_restarts: int = 0, **env: str) -> subprocess.Popen:
    """torchrun in its own process group (so that a timeout can stop it and its workers)."""
    return subprocess.Popen(torchrun_argv(*args, nproc=nproc, max_restarts=max_restarts),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=worker_env(**env),
                            cwd=REPO, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"torchrun ran past {timeout} s; log:\n{log.read_text()[-4000:]}") from None


def torchrun(*args: str, log: Path, timeout: float = 180, **kw) -> int:
    return finish(start(*args, log=log, **kw), timeout, log)


# --- in the workers --------------------------------------------------------------------------
def _train(argv: list[str]) -> None:
    from trainkit import register_tiny, register_tiny_slow

    register_tiny()
    register_tiny_slow()
    pid_dir = os.environ.get("DDPKIT_PID_DIR")
    if pid_dir:
        Path(pid_dir, f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))
    from bonedeploy.cli.app import main

    main(["train", *argv])


def _models():
    import torch
    from torch import nn

    from trainkit import build_tiny

    torch.manual_seed(0)
    with_bn = build_tiny(dropout=0.0)
    torch.manual_seed(0)
    without_bn = nn.Sequential(nn.Conv2d(1, 4, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                               nn.Linear(64, 2))
    return {"syncbn": (with_bn, True), "no_bn": (without_bn, True), "plain_bn": (with_bn, False)}


def _step(out: str) -> None:
    """One step of 8 images: single-process on the whole batch vs DDP on 2 x 4. Every rank runs
    the single-process step too (locally, no collective), rank 0 writes the largest differences."""
    import copy

    import torch
    import torch.distributed as dist

    from bonedeploy.training import ddp as dd
    from bonedeploy.training import ddp_loop, syncbn
    from bonedeploy.training.loop import train_epoch
    from bonedeploy.training.runtime import Runtime

    dist.init_process_group("gloo")
    ddp = dd.from_env("cpu")
    rt = Runtime(torch.device("cpu"), "fp32", False, True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 64, 64, generator=gen) * 2 + 0.5
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    result = {}
    for name, (model, sync) in _models().items():
        single = copy.deepcopy(model)
        opt = torch.optim.SGD(single.parameters(), lr=0.1)
        train_epoch(single, opt, x, y, batch_size=8, hflip_p=0.0, gen=torch.Generator().manual_seed(0), rt=rt)
        inner = copy.deepcopy(model)
        if sync:
            inner = syncbn.convert(inner, cuda=False)
        net = ddp_loop.wrap(inner, rt)
        opt = torch.optim.SGD(inner.parameters(), lr=0.1)
        ddp_loop.train_epoch(net, opt, x, y, batch_size=dd.per_rank_batch(8, ddp.world_size), hflip_p=0.0,
                             seed=0, epoch=0, ddp=ddp, rt=rt)
        a, b = dict(single.named_parameters()), dict(inner.named_parameters())
        grads = max(float((a[k].grad - b[k].grad).abs().max()) for k in a)
        params = max(float((a[k] - b[k]).detach().abs().max()) for k in a)
        sa, sb = single.state_dict(), inner.state_dict()
        buffers = max([float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if k not in a] or [0.0])
        result[name] = {"grad": grads, "param": params, "buffer": buffers,
                        "grad_norm": float(sum(float(p.grad.norm()) ** 2 for p in a.values()) ** 0.5),
                        "same_keys": sorted(sa) == sorted(sb)}
    if ddp.is_main:
        Path(out).write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


def _refusals(out: str) -> None:
    """Rank 0's refusal reaches every rank; a rank holding another split stops every rank."""
    import torch.distributed as dist

    from bonedeploy.errors import BonedeployError, ConfigError
    from bonedeploy.training import ddp as dd

    def refuse():
        raise ConfigError("runs/x already holds a run")

    dist.init_process_group("gloo")
    ddp = dd.from_env("cpu")
    result = {"ok": dd.decide_on_main(ddp, lambda: {"decided_by": ddp.rank})}
    try:
        dd.decide_on_main(ddp, refuse)
    except BonedeployError as e:
        result["refused"] = [type(e).__name__, str(e), e.exit_code]
    try:
        dd.check_same_split(ddp, "a" * 64 if ddp.is_main else "b" * 64)
    except ConfigError as e:
        result["split"] = str(e)
    dd.check_same_split(ddp, "c" * 64)  # the same on every rank: no error
    Path(out, f"rank{ddp.rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "train":
        _train(rest)
    elif mode == "step":
        _step(rest[0])
    elif mode == "refusals":
        _refusals(rest[0])
    else:
        raise SystemExit(f"ddpkit: unknown mode {mode!r}; valid: train, step, refusals")
