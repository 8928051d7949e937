"""The torch.compile baseline: the strongest plain-PyTorch path and what a user tries first.

Built on the torch backend (same checkpoint loading, device and precision handling) with the
module wrapped in ``torch.compile`` after loading. Not a registered backend: it exists to be
measured against, not deployed. ``dynamic=False`` specialises each batch size, as a fixed-batch
server would; max-autotune tunes kernels on the first call of each shape (minutes on an H100),
which lands in warm-up, not in the timed iterations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_compiled(path: str | Path, mode: str = "max-autotune", **options: Any):
    import torch

    from bonedeploy.backends.torch import TorchBackend

    cuda = torch.cuda.is_available()
    options = {"device": "cuda" if cuda else "cpu", "precision": "fp16" if cuda else "fp32", **options}

    class CompiledTorchBackend(TorchBackend):
        def _load(self) -> None:
            super()._load()
            self._model = self._torch.compile(self._model, mode=mode, dynamic=False)

        def describe(self) -> dict[str, Any]:
            return {**super().describe(), "compile": mode}

    return CompiledTorchBackend(path, **options)
