"""One DDP epoch and the all-reduced evaluation (the single-process loop: ``training.loop``).

Every rank holds the decoded split (``training.ddp`` checks it is the same split). A
``DistributedSampler`` over the train split gives each rank every world-size-th index of the
epoch's permutation, so global batch k (the k-th per-rank batch of every rank) is positions
k*B .. (k+1)*B of that permutation: the recipe's batch, cut into world-size pieces.

Everything random in an epoch comes from (seed, epoch) and, for dropout, the rank: the
permutation (the sampler's seed + epoch), the flips (one draw per image, the same on every rank)
and each rank's dropout stream. A job that torchrun relaunched therefore replays the epoch it
lost exactly; nothing random is carried over from one epoch to the next.
"""

from __future__ import annotations

from typing import Callable

import torch

from bonedeploy.training.ddp import Ddp, derive_seed
from bonedeploy.training.loop import EvalResult, FitStats, evaluate, flip_where, step, to_memory_format
from bonedeploy.training.runtime import Runtime


def rank_indices(n: int, ddp: Ddp, seed: int, epoch: int) -> torch.Tensor:
    """This rank's sample indices for the epoch (padded to equal length on every rank, as the
    sampler does, so every rank takes the same number of steps)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def epoch_flips(n: int, hflip_p: float, seed: int, epoch: int) -> torch.Tensor:
    """Per image (not per position): whether it is mirrored this epoch; the same on every rank."""
    gen = torch.Generator().manual_seed(derive_seed(seed, epoch, "flip"))
    return torch.rand(n, generator=gen) < hflip_p


def wrap(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """``DistributedDataParallel`` around a model whose BatchNorms are already synchronised
    (``syncbn.convert``); it broadcasts rank 0's weights, so every rank starts alike."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[rt.device.index] if rt.is_cuda else None)


def train_epoch(net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                *, batch_size: int, hflip_p: float, seed: int, epoch: int, ddp: Ddp, rt: Runtime,
                on_batch: Callable[[int], None] | None = None) -> FitStats:
    """One pass over this rank's share; ``batch_size`` is per rank. DDP averages the gradients,
    which is the gradient of the global batch's mean loss (equal shares on every rank)."""
    net.train()
    torch.manual_seed(derive_seed(seed, epoch, "dropout", ddp.rank))
    idx_all = rank_indices(x.shape[0], ddp, seed, epoch).to(x.device)
    flips = epoch_flips(x.shape[0], hflip_p, seed, epoch).to(x.device)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.float64)
    for i, start in enumerate(range(0, idx_all.numel(), batch_size)):
        idx = idx_all[start:start + batch_size]
        xb = to_memory_format(flip_where(x.index_select(0, idx), flips.index_select(0, idx)), rt)
        yb = y.index_select(0, idx)
        loss, logits = step(net, optimizer, xb, yb, rt)
        total += loss.double() * idx.numel()
        correct += (logits.argmax(1) == yb).sum().double()
        if on_batch is not None:
            on_batch(i + 1)
    loss_sum, right, seen = _all_sum(total, correct, idx_all.numel(), device=x.device)
    return FitStats(loss_sum / seen, right / seen)


def evaluate_shared(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                    rt: Runtime, ddp: Ddp) -> EvalResult:
    """Each rank evaluates every world-size-th image; loss and accuracy are all-reduced, so every
    rank (and the best-epoch choice on rank 0) sees the figures of the whole set."""
    part = evaluate(model, x[ddp.rank::ddp.world_size], y[ddp.rank::ddp.world_size],
                    batch_size=batch_size, rt=rt)
    loss_sum = part.loss * part.n if part.n else 0.0
    loss_sum, right, seen = _all_sum(torch.tensor(loss_sum, dtype=torch.float64), part.correct, part.n,
                                     device=x.device)
    n = int(round(seen))
    return EvalResult(loss_sum / n if n else float("nan"), right / n if n else float("nan"), int(round(right)),
                      n, torch.zeros(0, 0))


def _all_sum(*values, device) -> list[float]:
    import torch.distributed as dist

    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(device) for v in values])
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]
