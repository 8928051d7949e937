"""DistributedDataParallel under torchrun: who we are in the job, and what only rank 0 decides.

``bonedeploy train`` becomes one DDP worker when torchrun (or anything that sets the same
variables: SLURM's srun via torchrun, Kubeflow's PyTorchJob) started it: ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are all set. Without them
nothing here runs and training is the single process it always was.

Rank 0 alone reads and writes the run folder: it builds the split (hashing every file once, not
once per rank), checks ``--resume``/``--overwrite``, reads last.pt, and broadcasts what it decided,
or the error that refused the run, so every rank stops with the same message instead of waiting
for a rank that has already exited.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from bonedeploy.errors import BonedeployError, ConfigError

T = TypeVar("T")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("nccl", "gloo")


class RankZeroError(BonedeployError):
    """Rank 0 refused the run; the other ranks stop with its message and exit status."""


@dataclass(frozen=True)
class Ddp:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str  # "nccl" between GPUs, "gloo" on CPUs
    restart: int = 0  # TORCHELASTIC_RESTART_COUNT: > 0 after torchrun --max-restarts relaunched us
    run_id: str | None = None  # TORCHELASTIC_RUN_ID (--rdzv-id; a fresh uuid with --standalone)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the card and the checkpoint record about the job."""
        return {"world_size": self.world_size, "backend": self.backend,
                "nodes": -(-self.world_size // self.local_world_size),
                "local_world_size": self.local_world_size, "run_id": self.run_id}


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return all(env.get(k) for k in TORCHRUN_ENV)


def pick_backend(device: str, has_cuda: bool) -> str:
    """NCCL when the run trains on CUDA GPUs, gloo otherwise (``--device cpu`` or no GPU)."""
    return "nccl" if has_cuda and device != "cpu" else "gloo"


def from_env(device: str, env: Mapping[str, str] | None = None) -> Ddp | None:
    """The job as torchrun describes it, or None when torchrun did not start us."""
    import torch

    env = os.environ if env is None else env
    if not launched_by_torchrun(env):
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env["LOCAL_RANK"])
        local_world = int(env.get("LOCAL_WORLD_SIZE") or world)
        restart = int(env.get("TORCHELASTIC_RESTART_COUNT") or 0)
    except ValueError as e:
        raise ConfigError(f"torchrun environment is not numeric ({e}): RANK={env.get('RANK')!r} "
                          f"WORLD_SIZE={env.get('WORLD_SIZE')!r} LOCAL_RANK={env.get('LOCAL_RANK')!r}") from e
    backend = pick_backend(device, torch.cuda.is_available())
    if backend == "nccl" and local >= torch.cuda.device_count():
        raise ConfigError(f"torchrun LOCAL_RANK {local} but {torch.cuda.device_count()} GPU(s) visible: "
                          f"--nproc-per-node must not exceed the GPUs of a node")
    return Ddp(rank, world, local, local_world, backend, restart, env.get("TORCHELASTIC_RUN_ID"))


_current: list[Ddp] = []  # the job this process is a worker of, while ``session`` lasts
_sessions = [0]  # process groups this process has made: every rank makes the same number


def current() -> Ddp | None:
    return _current[-1] if _current else None


@contextlib.contextmanager
def session(device: str) -> Iterator[Ddp | None]:
    """Join the process group torchrun set up (env://) for the length of one ``train``; None and
    a no-op without torchrun. The group is left as found when a caller already made one."""
    ddp = from_env(device)
    if ddp is None:
        yield None
        return
    import torch
    import torch.distributed as dist

    if ddp.backend == "nccl":
        torch.cuda.set_device(ddp.local_rank)
    ours = not dist.is_initialized()
    if ours:
        init_group(ddp)
    _current.append(ddp)
    try:
        yield ddp
    finally:
        _current.pop()
        if ours and dist.is_initialized():
            dist.destroy_process_group()


def init_group(ddp: Ddp) -> None:
    """``init_process_group`` from torchrun's environment, in a store namespace of this attempt.

    torchrun's agent serves one TCPStore for the whole job (TORCHELASTIC_USE_AGENT_STORE) and,
    in torch 2.14.1, keeps it across ``--max-restarts``: the relaunched workers then read the dead
    workers' addresses and fail to connect (pytorch/pytorch#135712 has the history).
    Prefixing the keys with the restart count (and this process's group count) gives every attempt
    its own. (Setting
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun avoids the shared store altogether.)
    """
    import datetime

    import torch.distributed as dist

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(ddp.backend)
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=datetime.timedelta(minutes=10))
    _sessions[0] += 1
    prefix = f"bonedeploy/attempt_{ddp.restart}/group_{_sessions[0]}"
    dist.init_process_group(ddp.backend, store=dist.PrefixStore(prefix, store), rank=ddp.rank,
                            world_size=ddp.world_size)


def place(rt, ddp: Ddp | None):
    """The rank's own GPU (cuda:LOCAL_RANK) under NCCL; the runtime as it is otherwise."""
    if ddp is None or ddp.backend != "nccl":
        return rt
    import dataclasses

    import torch

    return dataclasses.replace(rt, device=torch.device("cuda", ddp.local_rank))


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The recipe's batch stays the global batch, so results stay comparable with one process."""
    if global_batch % world_size:
        lower = global_batch - global_batch % world_size
        options = [b for b in (lower, lower + world_size) if b > 0]
        raise ConfigError(f"--batch-size {global_batch} is not divisible by the world size {world_size}: "
                          f"the batch stays the global one (each rank takes batch / world size); use "
                          f"{' or '.join(map(str, options))}, or another --nproc-per-node")
    return global_batch // world_size


def decide_on_main(ddp: Ddp | None, decide: Callable[[], T]) -> T:
    """``decide()`` on rank 0 only; every rank returns its result, or raises its error."""
    if ddp is None:
        return decide()
    import torch.distributed as dist

    box: list[Any] = [None]
    failure: BaseException | None = None
    if ddp.is_main:
        try:
            box = [("ok", decide())]
        except BaseException as e:  # the others must not wait for a broadcast that never comes
            failure = e
            box = [("error", str(e), getattr(e, "exit_code", 1))]
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    if box[0][0] == "error":
        err = RankZeroError(f"rank 0: {box[0][1]}")
        err.exit_code = box[0][2]
        raise err
    return box[0][1]


def split_digest(train_paths: list[str], y_train, val_paths: list[str], y_val) -> str:
    """sha256 of the decoded split as a rank holds it: paths and labels, in order."""
    doc = {"train": [list(train_paths), [int(v) for v in y_train]],
           "val": [list(val_paths), [int(v) for v in y_val]]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def check_same_split(ddp: Ddp | None, digest: str) -> None:
    """Every rank must hold the same images in the same order (the sampler indexes into them):
    gathered and compared, so a rank that decoded something else (a file changed under it,
    --skip-bad leaving out another image) stops the run instead of training on another set."""
    if ddp is None:
        return
    import torch.distributed as dist

    digests: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(digests, digest)
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        raise ConfigError(f"ranks {odd} decoded another train/val split than rank 0 "
                          f"(split sha256 {digests[odd[0]][:12]} vs {digests[0][:12]}): every node "
                          f"must see the same DATA folder, unchanged during the run")


def restart_resume(cfg, ddp: Ddp | None):
    """After torchrun relaunched the job (``--max-restarts``), continue this job's own run.

    The relaunched workers run the same command line, without ``--resume``; they resume from
    last.pt when metrics.json says this very job (the same TORCHELASTIC_RUN_ID) wrote it, so at
    most the epoch in flight is lost. An older run in the folder is never picked up this way.
    """
    if ddp is None or ddp.restart == 0 or cfg.resume:
        return cfg
    out = Path(cfg.resolve().out)
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return cfg
    job = ((metrics.get("runtime") or {}).get("distributed") or {}).get("run_id")
    if job is not None and job == ddp.run_id and (out / "last.pt").is_file():
        return cfg.replace(resume=str(out))
    return cfg


def decode_workers(workers: int | None, ddp: Ddp | None) -> int | None:
    """Each rank decodes the whole set: split the node's cores between its ranks."""
    if ddp is None or workers is not None:
        return workers
    return max(1, (os.cpu_count() or 1) // ddp.local_world_size)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from (seed, epoch, rank, ...): the same on every machine and Python."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
