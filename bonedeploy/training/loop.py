"""One training epoch and batched evaluation over tensors that already live on the device.

No DataLoader: the decoded set is one tensor, batches are index slices of a permutation drawn
from a seeded CPU ``torch.Generator`` (so CPU and GPU runs see the same order and flips), and
the seed's RandomHorizontalFlip is a ``torch.where`` over a random mask on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bonedeploy.training.runtime import Runtime


@dataclass
class FitStats:
    """What the training pass saw, in train mode (dropout and flips on), for free."""

    loss: float
    accuracy: float


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy
    accuracy: float
    correct: int
    n: int
    logits: torch.Tensor  # N x classes, float32, on the CPU


def draw_epoch(n: int, hflip_p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's sample order and, per position, whether that sample is flipped."""
    perm = torch.randperm(n, generator=gen)
    flips = torch.rand(n, generator=gen) < hflip_p
    return perm, flips


def flip_where(xb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where ``mask`` is set (horizontal flip: the last axis)."""
    return torch.where(mask.view(-1, *([1] * (xb.dim() - 1))), xb.flip(-1), xb)


def to_memory_format(xb: torch.Tensor, rt: Runtime) -> torch.Tensor:
    return xb.contiguous(memory_format=torch.channels_last) if rt.channels_last else xb


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
         rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch (the one and the DDP loop share it): its mean loss and
    logits, detached."""
    with rt.autocast():
        logits = model(xb)
    loss = F.cross_entropy(logits.float(), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    hflip_p: float,
    gen: torch.Generator,
    rt: Runtime,
    on_batch: Callable[[int], None] | None = None,
) -> FitStats:
    """One pass in train mode; returns its mean loss and accuracy (dropout and flips on).

    Both are accumulated on the device so the GPU never waits for the host mid-epoch.
    """
    model.train()
    n = x.shape[0]
    perm, flips = draw_epoch(n, hflip_p, gen)
    perm = perm.to(x.device, non_blocking=True)
    flips = flips.to(x.device, non_blocking=True)
    total = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i, start in enumerate(range(0, n, batch_size)):
        idx = perm[start:start + batch_size]
        xb = to_memory_format(flip_where(x.index_select(0, idx), flips[start:start + batch_size]), rt)
        yb = y.index_select(0, idx)
        loss, logits = step(model, optimizer, xb, yb, rt)
        total += loss * idx.numel()
        correct += (logits.argmax(1) == yb).sum()
        if on_batch is not None:
            on_batch(i + 1)
    return FitStats(float(total / n), int(correct) / n)


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    rt: Runtime,
) -> EvalResult:
    """Eval-mode loss/accuracy over a whole set, batched, under ``inference_mode``."""
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = to_memory_format(x[start:start + batch_size], rt)
            with rt.autocast():
                chunks.append(model(xb).float())
        logits = torch.cat(chunks) if chunks else torch.zeros(0, 2, device=x.device)
        loss = F.cross_entropy(logits, y) if len(y) else torch.tensor(float("nan"))
        correct = int((logits.argmax(1) == y).sum())
    n = int(y.shape[0])
    return EvalResult(float(loss), correct / n if n else float("nan"), correct, n, logits.cpu())


def recalibrate_bn(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int, rt: Runtime,
                   max_images: int | None = 64) -> None:
    """Re-estimate BatchNorm running statistics over the training images ("precise BN").

    Early in training (a short CPU schedule: a few dozen Adam steps) the running averages lag
    the fast-moving weights and eval mode predicts one class; an exact average over the training
    set fixes that. torch's ``update_bn`` resets the statistics and averages cumulatively over at
    most ``max_images`` images (plenty for per-channel means and variances).
    """
    from torch.optim.swa_utils import update_bn

    if max_images and x.shape[0] > max_images:
        # Evenly spaced, so both classes of a class-sorted set are represented.
        x = x.index_select(0, torch.linspace(0, x.shape[0] - 1, max_images, device=x.device).long())
    batches = (to_memory_format(x[i:i + batch_size], rt) for i in range(0, x.shape[0], batch_size))
    with torch.no_grad(), rt.autocast():
        update_bn(batches, model)


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
