"""BatchNorm over the global batch: torch's SyncBatchNorm, and the same on CPUs (gloo).

torch's ``SyncBatchNorm`` refuses CPU tensors (its kernels are CUDA's), so a gloo job would
normalise each rank's half-batch on its own and train another model than one process does.
``GlooSyncBatchNorm`` computes the same statistics with two differentiable all-reduces (sum, then
the sum of squared deviations: the two-pass variance, not E[x²] - E[x]²); autograd all-reduces
their gradients back, which is exactly the gradient of the global batch. It is the class a
converted BatchNorm takes on the CPU; on CUDA torch's own runs. The state dict is a BatchNorm's,
so best.pt loads into the plain model that export builds.

(A BatchNorm is replaced, not re-classed: DDP refuses any ``SyncBatchNorm`` on the CPU.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class AllReduce(torch.autograd.Function):
    """Sum over ranks; the gradient is summed over ranks too (each rank's loss depends on every
    rank's statistics)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        t = t.clone()
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return AllReduce.apply(grad.contiguous(), ctx.group), None


class GlooSyncBatchNorm(_BatchNorm):
    """A BatchNorm whose training statistics are the whole job's (not a ``SyncBatchNorm``
    subclass: DDP refuses those on the CPU)."""

    process_group = None

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        world = dist.get_world_size(self.process_group) if dist.is_available() and dist.is_initialized() else 1
        if not self.training or world == 1:
            return super().forward(x)
        return self._global_batch_norm(x)

    def _global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), xf.numel() // xf.shape[1], dtype=xf.dtype, device=xf.device)
        total = AllReduce.apply(torch.cat([xf.sum(dims), count]), self.process_group)
        n = total[-1]
        mean = total[:-1] / n
        centred = xf - mean.view(shape)
        var = AllReduce.apply((centred * centred).sum(dims), self.process_group) / n
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), n.detach())
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / (n - 1)) if float(n) > 1 else var
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


def convert(model: nn.Module, cuda: bool) -> nn.Module:
    """Every BatchNorm as a synchronised one (torch's ``SyncBatchNorm`` on CUDA,
    ``GlooSyncBatchNorm`` on the CPU), with the same parameters, buffers and state-dict keys."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, _BatchNorm) and not isinstance(model, GlooSyncBatchNorm):
        new = GlooSyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine,
                                model.track_running_stats)
        if model.affine:
            new.weight, new.bias = model.weight, model.bias
        if model.track_running_stats:
            new.running_mean, new.running_var = model.running_mean, model.running_var
            new.num_batches_tracked = model.num_batches_tracked
        new.train(model.training)
        return new
    for name, child in model.named_children():
        model.add_module(name, convert(child, cuda))
    return model
