"""The names both sides of a bonedeploy Triton deployment agree on (server models, remote client)."""

from __future__ import annotations

IMAGE = "image"  # NAME: FP32 N x C x H x W, preprocessed to the card's spec
LOGITS = "logits"
PROBS = "probs"
FILE = "file"  # NAME_file: BYTES N x 1, the encoded file of each item
LABEL = "label"
STATUS = "status"  # "ok" or "error: <cause>"
FILE_SUFFIX = "_file"
OK = "ok"
SERVE_SPEC = "serve.json"  # beside model.py: what the Python-backend model loads (not served)


def file_model(name: str) -> str:
    return name + FILE_SUFFIX
