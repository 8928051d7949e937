"""The export gate: every artefact runs through the same Backend classes as ``infer`` and
``bench`` (``eval.parity.backend_logits``), and is compared with the reference on one ParitySet.

The reference is PyTorch fp32 on the CPU; every ONNX file runs on onnxruntime's CPU provider
whatever this machine offers, so a gate verdict means the same on a laptop and on a GPU server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.eval import parity
from bonedeploy.eval.parity import Gate, ParitySet
from bonedeploy.export.results import ExportedFile, Reference
from bonedeploy.util.fs import sha256_file

TORCH_REFERENCE = "PyTorch fp32 on the CPU"


def for_card(inputs: ParitySet, card: ModelCard) -> ParitySet:
    """The parity set, plus generated non-radiographs when the card has an OOD gate (its
    decisions are compared on both)."""
    return parity.with_probes(inputs, card.preprocess) if card.ood is not None else inputs


def run_backend(backend: Any, inputs: ParitySet, batch: int = parity.PARITY_BATCH) -> parity.Outputs:
    """Load ``backend``, run it over the set (and its OOD probes), close it."""
    with backend:
        return parity.backend_outputs(backend, inputs, batch)


def torch_reference(model: Any, card: ModelCard, checkpoint: Path, inputs: ParitySet) -> Reference:
    """The reference logits (and OOD scores) from the module export already holds (loaded once,
    not twice)."""
    from bonedeploy.backends.torch import TorchBackend

    backend = TorchBackend.from_module(model, card, checkpoint, device="cpu", precision="fp32")
    return _reference(inputs, run_backend(backend, inputs), TORCH_REFERENCE, card)


def onnx_cpu_outputs(path: Path, inputs: ParitySet) -> parity.Outputs:
    """``path`` on onnxruntime's CPU provider: the gate's runtime everywhere."""
    from bonedeploy.backends.base import open_backend

    return run_backend(open_backend(path, "onnxruntime", provider="cpu"), inputs)


def onnx_cpu_logits(path: Path, inputs: ParitySet) -> np.ndarray:
    """The logits alone of ``onnx_cpu_outputs``."""
    return onnx_cpu_outputs(path, inputs).logits


def onnx_reference(path: Path, inputs: ParitySet, card: ModelCard | None = None) -> Reference:
    """An ONNX file as its own reference (``bonedeploy export model.fp16.onnx``: no checkpoint)."""
    return _reference(inputs, onnx_cpu_outputs(path, inputs), f"{path.name} on onnxruntime CPU", card)


def _reference(inputs: ParitySet, out: parity.Outputs, runs_on: str, card: ModelCard | None) -> Reference:
    gate = getattr(card, "ood", None)
    if gate is None or out.ood is None:
        return Reference(inputs, out.logits, runs_on)
    return Reference(inputs, out.logits, runs_on, out.ood, gate)


def gate_file(path: Path, kind: str, precision: str, reference: Reference, cand: Any,
              classes, gates: dict[str, Gate], decision: Any = None) -> ExportedFile:
    """Compare ``cand`` (``parity.Outputs``, or logits alone) with the reference and record the
    file with its gate verdict (``decision``: the card's DecisionRule, for the figures at the
    operating point; the reference's OOD gate, for the OOD decisions)."""
    ps = reference.inputs
    out = cand if isinstance(cand, parity.Outputs) else parity.Outputs(np.asarray(cand), None)
    ood = None
    if reference.ood is not None:
        ood = parity.OODCheck(reference.ood_gate, reference.ood, out.ood, ps.ood_names)
    res = parity.compare(reference.logits, out.logits, ps.paths, classes, labels=ps.labels, decision=decision,
                         ood=ood)
    return ExportedFile(path, kind, precision, path.stat().st_size, sha256_file(path), res.to_dict(),
                        gates[precision].describe(), parity.check_gate(res, precision, gates))
