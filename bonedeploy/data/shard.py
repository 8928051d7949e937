"""Which part of an archive an image belongs to: ``--shard K/N``.

An image's part is sha256(its path relative to the input root, posix) mod N, so it depends on
the image's own name only: not on the order a file system lists the folder, not on the machine
or the mount point, and adding images never moves another image to another part. K is what a
Kubernetes Indexed Job (``JOB_COMPLETION_INDEX``) or a SLURM job array (``SLURM_ARRAY_TASK_ID``)
gives each task; ``auto`` reads it from there.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from bonedeploy.errors import ConfigError

K8S_INDEX = "JOB_COMPLETION_INDEX"
SLURM_ID, SLURM_MIN, SLURM_MAX, SLURM_COUNT = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN",
                                               "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")
FORMS = "K/N (0 <= K < N, e.g. 0/8), auto/N or auto"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigError(f"--shard {self.index}/{self.count}: K must be in 0..{self.count - 1} "
                              f"(N shards are numbered from 0, as array and Indexed Job indexes are)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    """The part (0..count-1) of the image whose relative path is ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def shard_key(path: str | Path, root: str | Path) -> str:
    """``path`` relative to the input root, posix: the same on every machine that mounts the root."""
    return Path(path).relative_to(root).as_posix()


def listing_digest(keys: Iterable[str]) -> str:
    """sha256 of the sorted relative paths of the whole input (every shard): equal digests mean
    the shards listed the same images."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(key.encode("utf-8") + b"\n")
    return h.hexdigest()


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard``: ``K/N``; ``auto/N`` (K from the job's index); ``auto`` (K and N from a SLURM
    array; a Kubernetes Job does not tell its pods the completion count, so give auto/N there)."""
    if text is None:
        return None
    env = os.environ if env is None else env
    k, sep, n = text.strip().partition("/")
    if k == "auto":
        index, count = task_index(env), _int(n, text) if sep else task_count(env)
    elif sep:
        index, count = _int(k, text), _int(n, text)
    else:
        raise ConfigError(f"--shard {text!r}: expected {FORMS}")
    if count < 1:
        raise ConfigError(f"--shard {text!r}: N must be >= 1")
    return Shard(index, count)


def task_index(env: Mapping[str, str]) -> int:
    if env.get(K8S_INDEX):
        return _int(env[K8S_INDEX], f"{K8S_INDEX}={env[K8S_INDEX]}")
    if env.get(SLURM_ID):
        return _int(env[SLURM_ID], f"{SLURM_ID}={env[SLURM_ID]}") - _int(env.get(SLURM_MIN) or "0", SLURM_MIN)
    raise ConfigError(f"--shard auto: neither {K8S_INDEX} (a Kubernetes Indexed Job) nor {SLURM_ID} "
                      f"(a SLURM job array) is set; give --shard K/N")


def task_count(env: Mapping[str, str]) -> int:
    if env.get(SLURM_COUNT):
        count = _int(env[SLURM_COUNT], SLURM_COUNT)
        lo, hi = _int(env.get(SLURM_MIN) or "0", SLURM_MIN), _int(env.get(SLURM_MAX) or "0", SLURM_MAX)
        if hi - lo + 1 != count:
            raise ConfigError(f"--shard auto: the SLURM array {lo}-{hi} has {count} tasks, so it has steps "
                              f"or gaps; submit --array=0-{count - 1} or give --shard K/N")
        return count
    raise ConfigError(f"--shard auto: the number of shards is unknown ({SLURM_COUNT} is not set; a "
                      f"Kubernetes Job does not tell its pods its completions); give --shard auto/N")


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise ConfigError(f"--shard: {what!r} is not a whole number; expected {FORMS}") from e
