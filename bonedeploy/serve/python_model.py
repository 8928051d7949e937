"""The two models ``bonedeploy serve`` hosts, as Triton Python-backend models.

They run inside Triton's Python-backend stub (one process per instance, fed through shared memory
by ``tritonserver``: no extra proxy hop). Each loads the artefact with the backend registry, as
``infer`` does. With dynamic batching one ``execute`` call receives several requests: their items
run as one batch, and each request gets its own response or its own error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.artefacts import triton as P
from bonedeploy.artefacts.ood import OOD_OUTPUT, rejection_statuses


def load_spec(args: dict[str, Any]) -> dict[str, Any]:
    """What ``bonedeploy serve`` wrote beside model.py (artefact path, backend options, limits)."""
    return json.loads((Path(args["model_repository"]) / args["model_version"] / P.SERVE_SPEC).read_text())


class _Model:
    def initialize(self, args: dict[str, Any]) -> None:
        from bonedeploy.backends import open_backend

        self.spec = load_spec(args)
        self.max_bytes = int(self.spec["max_request_mb"] * 2**20)
        self.backend = open_backend(self.spec["artefact"], self.spec.get("backend"),
                                    **self.spec.get("options", {})).load()
        self.card = self.backend.card
        self.classes = list(self.card.classes)
        self.ood = bool(self.spec.get("ood"))  # the config declares ood_score: the artefact computes it

    def finalize(self) -> None:
        self.backend.close()

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, the calibrated probabilities of the shared post-processing (float64: the
        decision at the card's operating point is made on them before they are sent as float32)
        and the OOD scores (NaN when the artefact computes none)."""
        from bonedeploy.eval.decision import rule_for

        if not len(x):
            k = len(self.classes)
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.float64), np.zeros((0,), np.float32)
        logits, scores = self.backend.infer_scored(x)
        logits = np.asarray(logits, dtype=np.float32)
        scores = np.full(len(x), np.nan, np.float32) if scores is None else np.asarray(scores, np.float32)
        return logits, rule_for(self.card).probabilities(logits), scores


class TensorModel(_Model):
    """``NAME``: preprocessed FP32 tensors in, ``logits`` and ``probs`` out, and ``ood_score``
    beside them when the artefact computes it (the client applies the card's threshold)."""

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb

        xs, good, responses = [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            x = pb.get_input_tensor_by_name(request, P.IMAGE).as_numpy()
            problem = self._check(x)
            if problem:
                responses[i] = pb.InferenceResponse(error=pb.TritonError(problem))
            else:
                xs.append(x)
                good.append(i)
        if xs:
            try:
                logits, probs, scores = self._predict(np.concatenate(xs))
            except Exception as e:  # the runtime failed for the whole batch: every request says so
                msg = f"inference failed ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
                for i in good:
                    responses[i] = pb.InferenceResponse(error=pb.TritonError(msg))
                return responses
            start = 0
            for i, x in zip(good, xs):
                end = start + len(x)
                out = [pb.Tensor(P.LOGITS, logits[start:end]), pb.Tensor(P.PROBS, probs[start:end].astype(np.float32))]
                if self.ood:
                    out.append(pb.Tensor(OOD_OUTPUT, scores[start:end].reshape(-1, 1)))
                responses[i] = pb.InferenceResponse(out)
                start = end
        return responses

    def _check(self, x: np.ndarray) -> str | None:
        if x.nbytes > self.max_bytes:
            return (f"request of {x.nbytes / 2**20:.1f} MB exceeds the server's --max-request-mb "
                    f"{self.spec['max_request_mb']:g}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.card.preprocess.input_shape:
            return f"{P.IMAGE} must be N x {' x '.join(map(str, self.card.preprocess.input_shape))}, got {x.shape}"
        return None


class FileModel(_Model):
    """``NAME_file``: encoded files in; per item ``probs``, ``logits``, ``label`` and ``status``
    (``ok``, ``error: <cause>``, or the OOD gate's ``rejected: out of distribution (...)``, then
    with no label, as ``infer`` writes it), and ``ood_score`` when the artefact computes it."""

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb

        from bonedeploy.serve.decode import decode_items

        per_request = [pb.get_input_tensor_by_name(r, P.FILE).as_numpy().reshape(-1) for r in requests]
        items = [bytes(v) for arr in per_request for v in arr]
        decoded = decode_items(items, self.card.preprocess, self.max_bytes)
        k = len(self.classes)
        logits = np.zeros((len(items), k), np.float32)
        probs = np.zeros((len(items), k), np.float64)
        scores = np.full(len(items), np.nan, np.float32)
        status = [P.OK] * len(items)
        for i, cause in decoded.errors.items():
            status[i] = "error: " + " ".join(str(cause).split())
        try:
            lg, pr, sc = self._predict(decoded.x)
            logits[decoded.ok], probs[decoded.ok], scores[decoded.ok] = lg, pr, sc
        except Exception as e:
            for i in decoded.ok:
                status[i] = f"error: inference failed ({type(e).__name__})"
        from bonedeploy.eval.decision import rule_for

        predicted = rule_for(self.card).decide(probs) if len(items) else []  # at the operating point
        labels = [self.classes[int(c)] if s == P.OK else "" for c, s in zip(predicted, status)]
        refused = rejection_statuses(self.card.ood if self.ood else None, scores[decoded.ok])
        for i, why in zip(decoded.ok, refused):
            if status[i] == P.OK and not np.isfinite(logits[i]).all():
                status[i], labels[i] = "error: the model returned non-finite logits", ""
            elif status[i] == P.OK and why:
                status[i], labels[i] = why, ""
        responses, start = [], 0
        for arr in per_request:
            end = start + len(arr)
            out = [pb.Tensor(P.PROBS, probs[start:end].astype(np.float32)), pb.Tensor(P.LOGITS, logits[start:end]),
                   pb.Tensor(P.LABEL, _bytes_column(labels[start:end])),
                   pb.Tensor(P.STATUS, _bytes_column(status[start:end]))]
            if self.ood:
                out.append(pb.Tensor(OOD_OUTPUT, scores[start:end].reshape(-1, 1)))
            responses.append(pb.InferenceResponse(out))
            start = end
        return responses


def _bytes_column(values: list[str]) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=object).reshape(len(values), 1)
