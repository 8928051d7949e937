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

    def finalize(self) -> None:
        self.backend.close()

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the calibrated probabilities of the shared post-processing (float64: the
        decision at the card's operating point is made on them before they are sent as float32)."""
        from bonedeploy.eval.decision import rule_for

        if not len(x):
            k = len(self.classes)
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.float64)
        logits = np.asarray(self.backend.infer(x), dtype=np.float32)
        return logits, rule_for(self.card).probabilities(logits)


class TensorModel(_Model):
    """``NAME``: preprocessed FP32 tensors in, ``logits`` and ``probs`` out."""

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
                logits, probs = self._predict(np.concatenate(xs))
            except Exception as e:  # the runtime failed for the whole batch: every request says so
                msg = f"inference failed ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
                for i in good:
                    responses[i] = pb.InferenceResponse(error=pb.TritonError(msg))
                return responses
            start = 0
            for i, x in zip(good, xs):
                end = start + len(x)
                responses[i] = pb.InferenceResponse([pb.Tensor(P.LOGITS, logits[start:end]),
                                                     pb.Tensor(P.PROBS, probs[start:end].astype(np.float32))])
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
    """``NAME_file``: encoded files in; per item ``probs``, ``logits``, ``label`` and ``status``."""

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb

        from bonedeploy.serve.decode import decode_items

        per_request = [pb.get_input_tensor_by_name(r, P.FILE).as_numpy().reshape(-1) for r in requests]
        items = [bytes(v) for arr in per_request for v in arr]
        decoded = decode_items(items, self.card.preprocess, self.max_bytes)
        k = len(self.classes)
        logits = np.zeros((len(items), k), np.float32)
        probs = np.zeros((len(items), k), np.float64)
        status = [P.OK] * len(items)
        for i, cause in decoded.errors.items():
            status[i] = "error: " + " ".join(str(cause).split())
        try:
            lg, pr = self._predict(decoded.x)
            logits[decoded.ok], probs[decoded.ok] = lg, pr
        except Exception as e:
            for i in decoded.ok:
                status[i] = f"error: inference failed ({type(e).__name__})"
        from bonedeploy.eval.decision import rule_for

        predicted = rule_for(self.card).decide(probs) if len(items) else []  # at the operating point
        labels = [self.classes[int(c)] if s == P.OK else "" for c, s in zip(predicted, status)]
        for i in decoded.ok:
            if status[i] == P.OK and not np.isfinite(logits[i]).all():
                status[i], labels[i] = "error: the model returned non-finite logits", ""
        responses, start = [], 0
        for arr in per_request:
            end = start + len(arr)
            responses.append(pb.InferenceResponse([
                pb.Tensor(P.PROBS, probs[start:end].astype(np.float32)), pb.Tensor(P.LOGITS, logits[start:end]),
                pb.Tensor(P.LABEL, _bytes_column(labels[start:end])),
                pb.Tensor(P.STATUS, _bytes_column(status[start:end]))]))
            start = end
        return responses


def _bytes_column(values: list[str]) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=object).reshape(len(values), 1)
