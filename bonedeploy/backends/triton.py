"""A Triton server hosting a bonedeploy model, as a backend: ``grpc://HOST:PORT/NAME`` or
``http://HOST:PORT/NAME``.

``load()`` reads the model card from the server's model config (``bonedeploy serve`` and
``export --triton-repo`` both put it there), so ``infer`` and ``bench`` treat a remote model like
a file. ``infer`` sends preprocessed batches to ``NAME``; with ``remote_decode`` it sends the files'
bytes to ``NAME_file`` and the server decodes them. tritonclient is imported only in ``load()``;
never torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bonedeploy.backends.base import Backend, register_backend
from bonedeploy.backends.options import Option
from bonedeploy.errors import ArtefactError, BackendUnavailableError, ConfigError
from bonedeploy.artefacts import triton as P
from bonedeploy.artefacts.ood import OOD_OUTPUT, REJECTED

SCHEMES = ("grpc", "http")
_URL = re.compile(r"^(?P<scheme>[a-z]+):/{1,2}(?P<host>[^/]+)/(?P<model>[^/?#]+)/?$")


def parse_url(url: str | Path) -> tuple[str, str, str]:
    """(scheme, host:port, model). A URL that went through ``Path()`` lost one slash; accept it."""
    m = _URL.match(str(url))
    if not m or m["scheme"] not in SCHEMES:
        raise ConfigError(f"{url}: expected grpc://HOST:PORT/NAME or http://HOST:PORT/NAME "
                          f"(schemes: {', '.join(SCHEMES)})")
    host = m["host"] if ":" in m["host"] else f"{m['host']}:{8001 if m['scheme'] == 'grpc' else 8000}"
    return m["scheme"], host, m["model"]


@dataclass
class RemoteBatch:
    """One batch decoded on the server: the fields ``infer`` reads from a locally decoded batch."""

    paths: list[Path]
    logits: np.ndarray  # n_ok x K
    ok: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    ood: np.ndarray | None = None  # n_ok OOD scores, when the server computes them

    @property
    def x(self) -> np.ndarray:
        return np.zeros((0,), np.float32)


@register_backend
class TritonBackend(Backend):
    name = "triton"
    suffixes = ()
    schemes = SCHEMES

    OPTIONS = (
        Option("remote_decode", "send the files' bytes to NAME_file; the server decodes them", False, type=bool),
        Option("timeout_s", "seconds a request may take", 60.0, type=float, minimum=0.001),
        Option("device", "auto only: the server's device is bonedeploy serve's choice", "auto", choices=("auto",),
               note="the server chose its device when it started (bonedeploy serve --device)"),
    )

    def __init__(self, url, **options: Any):
        super().__init__(str(url), **options)
        self.scheme, self.host, self.model = parse_url(url)
        self.url = self.source = f"{self.scheme}://{self.host}/{self.model}"
        self.remote_decode = self.options["remote_decode"]
        self.timeout_s = self.options["timeout_s"]
        self.artefact_sha256: str | None = None

    def _load(self) -> None:
        try:
            if self.scheme == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except ImportError as e:
            raise BackendUnavailableError(f"{self.url}: the Triton client needs tritonclient[http,grpc] "
                                          f"(pip install 'bonedeploy[serve]'; {e})") from e
        from tritonclient.utils import InferenceServerException

        from bonedeploy.artefacts.triton import card_from_parameters

        self._tc, self._exc = tc, InferenceServerException
        self._client = tc.InferenceServerClient(self.host, **({"network_timeout": self.timeout_s,
                                                               "connection_timeout": self.timeout_s}
                                                              if self.scheme == "http" else {}))
        try:
            if not self._client.is_model_ready(self.model):
                raise ArtefactError(f"{self.url}: the server has no ready model {self.model!r}")
            cfg = self._client.get_model_config(self.model, **({"as_json": True} if self.scheme == "grpc" else {}))
        except InferenceServerException as e:
            raise BackendUnavailableError(f"{self.url}: cannot reach the Triton server ({_one_line(e)})") from e
        except OSError as e:  # http: connection refused before any Triton status
            raise BackendUnavailableError(f"{self.url}: cannot reach the Triton server ({e})") from e
        cfg = cfg.get("config", cfg)
        self._card, self.artefact_sha256 = card_from_parameters(cfg.get("parameters") or {}, self.url)
        self.max_batch = int(cfg.get("max_batch_size") or 1)
        self._config = cfg
        self._input = (cfg.get("input") or [{}])[0]
        # a server whose artefact computes the OOD score declares it (bonedeploy serve, --triton-repo)
        self._ood_output = OOD_OUTPUT in {o.get("name") for o in cfg.get("output") or []}
        if self.remote_decode:
            file_model = P.file_model(self.model)
            if not self._client.is_model_ready(file_model):
                raise ArtefactError(f"{self.url}: --remote-decode needs the model {file_model!r} "
                                    "(bonedeploy serve hosts it; an exported repository does not)")

    def declared_input_shape(self) -> tuple[int | None, ...] | None:
        dims = self._input.get("dims")
        return tuple(int(d) if int(d) > 0 else None for d in dims) if dims else None

    def declared_output_width(self) -> int | None:
        out = {o.get("name"): o for o in self._config.get("output") or []}
        dims = (out.get(P.LOGITS) or {}).get("dims")
        return int(dims[-1]) if dims else None

    @property
    def gives_ood_score(self) -> bool:
        return self.loaded and self._ood_output

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_scored(batch)[0]

    def _infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        name = self._input.get("name") or P.IMAGE
        outputs = [P.LOGITS, OOD_OUTPUT] if self._ood_output else [P.LOGITS]
        parts, scores = [], []
        for s in range(0, len(batch), self.max_batch):
            chunk = np.ascontiguousarray(batch[s:s + self.max_batch])
            inp = self._tc.InferInput(name, list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            result = self._call(self.model, [inp], outputs)
            parts.append(np.asarray(result.as_numpy(P.LOGITS), dtype=np.float32))
            if self._ood_output:
                scores.append(np.asarray(result.as_numpy(OOD_OUTPUT), dtype=np.float32).reshape(-1))
        logits = np.concatenate(parts) if parts else np.zeros((0, len(self.card.classes)), np.float32)
        if not self._ood_output:
            return logits, None
        return logits, np.concatenate(scores) if scores else np.zeros((0,), np.float32)

    def infer_files(self, blobs: Sequence[bytes]) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        """Encoded files -> (logits n x K, status per item, OOD scores or None), decoded on the server."""
        logits, status, scores = [], [], []
        outputs = [P.LOGITS, P.STATUS] + ([OOD_OUTPUT] if self._ood_output else [])
        for s in range(0, len(blobs), self.max_batch):
            arr = np.array([[b] for b in blobs[s:s + self.max_batch]], dtype=object)
            inp = self._tc.InferInput(P.FILE, list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr)
            r = self._call(P.file_model(self.model), [inp], outputs)
            logits.append(np.asarray(r.as_numpy(P.LOGITS), dtype=np.float32))
            status += [_text(v) for v in r.as_numpy(P.STATUS).reshape(-1)]
            if self._ood_output:
                scores.append(np.asarray(r.as_numpy(OOD_OUTPUT), dtype=np.float32).reshape(-1))
        k = len(self.card.classes)
        return ((np.concatenate(logits) if logits else np.zeros((0, k), np.float32)), status,
                (np.concatenate(scores) if scores else np.zeros((0,), np.float32)) if self._ood_output else None)

    def iterate_files(self, batches: Sequence[Sequence[Path]]) -> Iterator[RemoteBatch]:
        """``infer --remote-decode``: per batch, read the files here and let the server decode them."""
        for paths in batches:
            paths = list(paths)
            blobs, where, errors = [], [], {}
            for i, p in enumerate(paths):
                try:
                    blobs.append(Path(p).read_bytes())
                    where.append(i)
                except OSError as e:
                    errors[i] = _read_cause(e)
            logits, status, scores = self.infer_files(blobs) if blobs else (None, [], None)
            ok = []
            for j, (i, st) in enumerate(zip(where, status)):
                if st == P.OK or st.startswith(REJECTED):  # infer applies the same gate to the score
                    ok.append((i, j))
                else:
                    errors[i] = st.removeprefix("error: ")
            keep = [j for _, j in ok]
            rows = logits[keep] if ok else np.zeros((0, len(self.card.classes)), np.float32)
            ood = None if scores is None else (scores[keep] if ok else np.zeros((0,), np.float32))
            yield RemoteBatch(paths, rows, [i for i, _ in ok], errors, ood)

    def _call(self, model: str, inputs: list, outputs: list[str]):
        req = [self._tc.InferRequestedOutput(o) for o in outputs]
        try:
            if self.scheme == "grpc":
                return self._client.infer(model, inputs, outputs=req, client_timeout=self.timeout_s)
            return self._client.infer(model, inputs, outputs=req)
        except self._exc as e:
            raise ArtefactError(f"{self.url}: the server refused the request ({_one_line(e)})") from e

    def describe(self) -> dict[str, Any]:
        d = {"backend": self.name, "path": self.url, "url": self.url, "model": self.model,
             "remote_decode": self.remote_decode}
        if self.loaded:
            d.update(precision=self.card.precision, artefact_sha256=self.artefact_sha256,
                     max_batch=self.max_batch)
        return d

    def _close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _read_cause(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(e, PermissionError):
        return "permission denied"
    return f"cannot open ({e.strerror or e})"
