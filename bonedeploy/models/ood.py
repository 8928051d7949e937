"""The out-of-distribution score as a part of the model: one torch implementation that the torch
backend runs and the ONNX export traces into the graph (its second output, ``ood_score``).

``ScoredModel`` wraps a classifier: a forward hook takes the output of the family's last
convolutional block (``bonedeploy.models.last_conv_layer``), global-average-pools it, and
``OODHead`` scores it with the fitted tensors (registered buffers: initializers in the graph).
Scores, higher = less like the training images:

- ``energy`` (Liu et al. 2020): -logsumexp(logits); no features, no tensors.
- ``mahalanobis`` (Lee et al. 2018): min over classes of (f - mu_c)' S^-1 (f - mu_c), class means
  and one tied covariance, stored as ``proj`` = a Cholesky factor L of S^-1 (so the score is
  min_c |f L - mu_c L|^2) and ``means`` = mu_c L, 1 x classes x D. With ``power`` the pooled features first go
  through a signed square root (power normalisation), which bonedeploy measured to generalise
  better from few training images (``bonedeploy.eval.ood``, benchmarks/ood.py).
- ``knn`` (Sun et al. 2022): 1 - the k-th largest cosine similarity to the training features
  (``bank``, unit columns, D x n).

Buffers are stored in the shape the graph uses them in: an op on a buffer (a transpose, an
unsqueeze) is folded by the exporter into a constant of another name, which an int8 refit
(``export.ood_refit``) could not find.

In front of every method, an input check: an image whose pixels have (almost) no spread, blank or
saturated, scores ``BLANK_SCORE`` whatever its features, so no model can call a black frame
"Normal". The head always computes in float32 (scores reach 1e5 and more: beyond float16).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bonedeploy.models.ood_spec import BLANK_SCORE, DEFAULT_MIN_STD

CKPT_KEY = "ood"  # checkpoint entry: {"tensors": {name: tensor}, "k": int | None}; the card has the rest


class OODHead(nn.Module):
    """Scores pooled features (or logits, for energy) of a batch; ``spread`` (each image's pixel
    standard deviation) feeds the input check."""

    def __init__(self, method: str, tensors: dict[str, Any] | None = None, power: bool = False,
                 k: int | None = None, min_std: float = DEFAULT_MIN_STD):
        super().__init__()
        self.method, self.power, self.k, self.min_std = method, bool(power), k, float(min_std)
        for name, value in (tensors or {}).items():
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32))

    @property
    def needs_features(self) -> bool:
        return self.method != "energy"

    def forward(self, spread: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        return self.score(spread, logits, features)

    def score(self, spread: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if self.method == "energy":
            score = -torch.logsumexp(logits.float(), dim=1)
        else:
            f = features.float()
            if self.power:
                f = torch.sign(f) * torch.sqrt(torch.abs(f))
            score = self._mahalanobis(f) if self.method == "mahalanobis" else self._knn(f)
        # score + BLANK_SCORE where blank (the score vanishes beside it in float32): arithmetic, not
        # a Where over a constant tensor, which int8 calibration's histograms cannot bin
        return score + (spread < self.min_std).float() * BLANK_SCORE

    def _mahalanobis(self, f: torch.Tensor) -> torch.Tensor:
        z = f @ self.proj  # N x D
        d = z.unsqueeze(1) - self.means  # N x C x D
        return (d * d).sum(dim=2).min(dim=1).values

    def _knn(self, f: torch.Tensor) -> torch.Tensor:
        unit = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sims = unit @ self.bank  # N x n_bank
        return 1.0 - torch.topk(sims, self.k, dim=1).values[:, -1]


class ScoredModel(nn.Module):
    """``model`` plus its OOD head: ``forward(x) -> (logits, ood_score)``."""

    def __init__(self, model: nn.Module, layer: str | None, head: OODHead):
        super().__init__()
        self.model, self.layer, self.head = model, layer, head
        self._pooled: torch.Tensor | None = None
        if head.needs_features:
            model.get_submodule(layer).register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        # kept as is and pooled in forward: an op in the hook would be traced into the layer's own
        # scope, and the export's module map would name the pooled tensor as the layer's output
        self._pooled = output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        kept, self._pooled = self._pooled, None
        features = None if kept is None else kept.float().mean(dim=(2, 3))
        return logits, self.head(pixel_spread(x), logits, features)

    def float_head(self) -> "ScoredModel":
        """Keep the head in float32 after ``.to(float16)`` (the torch backend's fp16)."""
        self.head.float()
        return self


def pixel_spread(x: torch.Tensor) -> torch.Tensor:
    """Each image's pixel standard deviation (population), what the blank check reads."""
    return x.float().flatten(1).std(dim=1, correction=0)


def head_from_checkpoint(ckpt: dict[str, Any], gate: Any) -> OODHead:
    """The head of a card's ``OODGate`` with the checkpoint's fitted tensors."""
    stored = ckpt.get(CKPT_KEY) or {}
    checks = gate.input_checks or {}
    return OODHead(gate.method, stored.get("tensors") or {}, power=gate.transform == "signed-sqrt",
                   k=stored.get("k"), min_std=float(checks.get("min_std", DEFAULT_MIN_STD)))


def scored_model(model: nn.Module, card: Any, ckpt: dict[str, Any]) -> nn.Module:
    """``model`` wrapped with its OOD head when the card has a gate, else ``model`` unchanged (a
    checkpoint from before the gate, or one fitted without it)."""
    gate = getattr(card, "ood", None)
    if gate is None:
        return model
    return ScoredModel(model, gate.feature_layer, head_from_checkpoint(ckpt, gate)).eval()


def run_with_features(model: nn.Module, layer: str | None, x: Any, batch: int = 32,
                      device: Any = "cpu") -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Logits, the pooled features of ``layer`` (None: no features) and each image's pixel spread
    over ``x`` (N x C x H x W, numpy or torch), in eval mode, float32: what the gate is fitted on."""
    holder: dict[str, torch.Tensor] = {}
    handle = None
    if layer is not None:
        handle = model.get_submodule(layer).register_forward_hook(
            lambda _m, _i, out: holder.__setitem__("f", out.float().mean(dim=(2, 3))))
    logits, feats, spread = [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(x), batch):
                xb = torch.as_tensor(x[s:s + batch], dtype=torch.float32).to(device)
                logits.append(model(xb).float().cpu().numpy())
                spread.append(pixel_spread(xb).cpu().numpy())
                if layer is not None:
                    feats.append(holder.pop("f").cpu().numpy())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    if not logits:
        raise ValueError("no images to run")
    return np.concatenate(logits), (np.concatenate(feats) if feats else None), np.concatenate(spread)
