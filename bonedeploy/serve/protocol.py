"""The names both sides of a bonedeploy Triton deployment agree on (server models, remote client)."""

from __future__ import annotations

import json
from typing import Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ArtefactError

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


# Model-config parameters (config.pbtxt, `GET /v2/models/NAME/config`): the card travels there.
CARD_PARAM = "bonedeploy.card"
SHA_PARAM = "bonedeploy.artefact_sha256"


def card_parameters(card: ModelCard, sha256: str | None) -> dict[str, str]:
    """The card as config parameters: all of it as JSON, and the artefact's sha256 on its own."""
    params = {CARD_PARAM: json.dumps(card.to_dict(), sort_keys=True)}
    if sha256:
        params[SHA_PARAM] = sha256
    return params


def card_from_parameters(params: dict[str, Any], where: str) -> tuple[ModelCard, str | None]:
    """Inverse of ``card_parameters``; accepts Triton's JSON ({"string_value": ...}) or plain strings."""
    def text(key: str) -> str | None:
        v = params.get(key)
        return v.get("string_value") if isinstance(v, dict) else v

    raw = text(CARD_PARAM)
    if not raw:
        raise ArtefactError(f"{where}: the model config has no {CARD_PARAM} parameter "
                            "(is it a bonedeploy model?)")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ArtefactError(f"{where}: malformed {CARD_PARAM} parameter ({e})") from e
    return ModelCard.from_dict(data, where), text(SHA_PARAM)
