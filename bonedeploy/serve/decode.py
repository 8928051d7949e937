"""Encoded file bytes -> preprocessed tensors on the server, through infer's own reader.

Each item is written to a private temporary file and read with ``bonedeploy.data.imageio.
read_image`` + the card's ``PreprocessSpec.apply``, exactly what ``infer`` does with a path, so the
server sees the same numbers and refuses the same files with the same causes. Causes never carry
the bytes, the temporary name or DICOM header values.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.errors import ImageReadError

_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@dataclass
class DecodedItems:
    x: np.ndarray  # n_ok x C x H x W float32
    ok: list[int] = field(default_factory=list)  # item index of each row of x
    errors: dict[int, str] = field(default_factory=dict)  # item index -> cause


def decode_items(items: Sequence[bytes], spec: PreprocessSpec, max_bytes: int | None = None) -> DecodedItems:
    arrays, ok, errors = [], [], {}
    for i, data in enumerate(items):
        try:
            arrays.append(decode_one(data, spec, max_bytes))
            ok.append(i)
        except ImageReadError as e:
            errors[i] = e.cause
        except MemoryError:
            errors[i] = "out of memory while decoding"
        except Exception as e:  # a preprocessing bug must not cost the other items their results
            errors[i] = f"{type(e).__name__} while decoding"
    x = np.stack(arrays) if arrays else np.zeros((0, *spec.input_shape), np.float32)
    return DecodedItems(x, ok, errors)


def decode_one(data: bytes, spec: PreprocessSpec, max_bytes: int | None = None) -> np.ndarray:
    from bonedeploy.data.imageio import read_image

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageReadError("request", f"expected file bytes, got {type(data).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageReadError("request", f"file of {len(data) / 2**20:.1f} MB exceeds the server's "
                                        f"--max-request-mb {max_bytes / 2**20:g}")
    fd, tmp = tempfile.mkstemp(prefix="bonedeploy-", suffix=".img", dir=_TMP_DIR)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return spec.apply(read_image(Path(tmp)))
    finally:
        os.unlink(tmp)
