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


def run_backend(backend: Any, inputs: ParitySet, batch: int = parity.PARITY_BATCH) -> np.ndarray:
    """Load ``backend``, run it over the set, close it."""
    with backend:
        return parity.backend_logits(backend, inputs, batch)


def torch_reference(model: Any, card: ModelCard, checkpoint: Path, inputs: ParitySet) -> Reference:
    """The reference logits from the module export already holds (loaded once, not twice)."""
    from bonedeploy.backends.torch import TorchBackend

    backend = TorchBackend.from_module(model, card, checkpoint, device="cpu", precision="fp32")
    return Reference(inputs, run_backend(backend, inputs), TORCH_REFERENCE)


def onnx_cpu_logits(path: Path, inputs: ParitySet) -> np.ndarray:
    """``path`` on onnxruntime's CPU provider: the gate's runtime everywhere."""
    from bonedeploy.backends.base import open_backend

    return run_backend(open_backend(path, "onnxruntime", provider="cpu"), inputs)


def onnx_reference(path: Path, inputs: ParitySet) -> Reference:
    """An ONNX file as its own reference (``bonedeploy export model.fp16.onnx``: no checkpoint)."""
    return Reference(inputs, onnx_cpu_logits(path, inputs), f"{path.name} on onnxruntime CPU")


def gate_file(path: Path, kind: str, precision: str, reference: Reference, cand: np.ndarray,
              classes, gates: dict[str, Gate]) -> ExportedFile:
    """Compare ``cand`` with the reference and record the file with its gate verdict."""
    ps = reference.inputs
    res = parity.compare(reference.logits, cand, ps.paths, classes, labels=ps.labels)
    return ExportedFile(path, kind, precision, path.stat().st_size, sha256_file(path), res.to_dict(),
                        gates[precision].describe(), parity.check_gate(res, precision, gates))
