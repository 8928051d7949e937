"""``run_server(ServeConfig)``: an artefact behind the bundled ``tritonserver``.

The artefact is opened and checked in this process first (the same checks and messages as
``infer``), so a wrong or missing engine never starts a server. A temporary model repository then
holds two Python-backend models (``NAME``: tensors, ``NAME_file``: file bytes, decoded on the
server) and ``tritonserver`` serves it directly: one hop less than PyTriton's proxy (measured in
``benchmarks/serve.py``). This process forwards SIGINT/SIGTERM and bounds the shutdown.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bonedeploy.errors import BonedeployError, ConfigError
from bonedeploy.artefacts import triton as P
from bonedeploy.artefacts.ood import OOD_OUTPUT
from bonedeploy.artefacts.triton import (
    DEFAULT_NAME,
    DEFAULT_QUEUE_DELAY_US,
    ModelConfig,
    TensorSpec,
    card_parameters,
    check_model_name,
    resolve_max_batch,
)
from bonedeploy.util.defaults import none_means_default

Log = Callable[[str], None]
LOOPBACK = "127.0.0.1"
SHUTDOWN_S = 10.0  # SIGINT/SIGTERM -> ports free, whatever is in flight
TRITON_EXIT_TIMEOUT_S = 5  # Triton's own grace period for in-flight requests (within SHUTDOWN_S)


class ServeError(BonedeployError):
    """The server could not start or stopped unexpectedly."""


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class ServeConfig:
    engine: Path
    name: str = DEFAULT_NAME
    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int | None = None  # default: the engine profile's max (else export's default)
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    # Two: one instance runs a batch while the other gathers the next; at 8 clients on 2 cores that
    # is the difference between 0.7x and ~1x in-process batch-8 throughput (benchmarks/serve.py).
    instances: int = 2
    max_request_mb: float = 64.0
    backend: str | None = None
    device: str | None = None
    provider: str | None = None
    ready_timeout_s: float = 180.0
    verbose: bool = False  # Triton's own log on stderr (else kept in a file, tail shown on failure)

    def validate(self) -> None:
        check_model_name(self.name)
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port,
                 "--metrics-port": self.metrics_port}
        for opt, port in ports.items():
            if not 1 <= port <= 65535:
                raise ConfigError(f"{opt} {port}: must be in 1..65535")
        if len(set(ports.values())) != 3:
            raise ConfigError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        if self.max_request_mb <= 0:
            raise ConfigError(f"--max-request-mb must be > 0, got {self.max_request_mb}")
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1, got {self.instances}")

    @property
    def client_host(self) -> str:
        return LOOPBACK if self.host in ("0.0.0.0", "", "::") else self.host

    def urls(self) -> dict[str, str]:
        h = self.client_host
        return {"http": f"http://{h}:{self.http_port}", "grpc": f"grpc://{h}:{self.grpc_port}",
                "metrics": f"http://{h}:{self.metrics_port}/metrics"}


@dataclass
class Prepared:
    """What was checked before start-up: the card, the batching limits, the repository."""

    card: Any
    describe: dict[str, Any]
    choice: Any  # backends.select.Choice: which runtime and why (printed like infer's)
    max_batch: int
    profile_max: int | None
    repo: Path
    backends: Path
    workdir: Path
    configs: dict[str, str] = field(default_factory=dict)  # model name -> config.pbtxt text


def run_server(config: ServeConfig, log: Log | None = None, ready: Callable[[Prepared], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a requested shutdown, ServeError if Triton dies."""
    from bonedeploy.serve.runtime import check_stub_numpy, find_triton

    log = log or (lambda m: print(m, flush=True))
    config.validate()
    dist = find_triton()
    check_stub_numpy(dist)
    check_ports_free(config)
    prep = prepare(config, dist)
    try:
        with _Supervisor(config, dist, prep) as sup:
            sup.wait_ready()
            log(startup_banner(config, prep))
            if ready:
                ready(prep)
            return sup.run_until_stopped()
    finally:
        shutil.rmtree(prep.workdir, ignore_errors=True)


# --- before start-up ----------------------------------------------------------------------------

def check_ports_free(config: ServeConfig) -> None:
    for what, port in (("http", config.http_port), ("grpc", config.grpc_port), ("metrics", config.metrics_port)):
        with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((config.host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ServeError(f"port {port} on {config.host} is already in use ({what}); "
                                     f"stop what holds it or choose another with --{what}-port") from e
                raise ServeError(f"cannot bind {config.host}:{port} ({what}): {e.strerror or e}") from e


def backend_options(config: ServeConfig, backend: str, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Options for the served runtime: the ones ``bench --select`` recorded with it (as ``infer``
    runs them), then what a shared server needs. Each instance keeps a thread per core (alone, at
    concurrency 1, it answers as fast as ``infer``), so the instances and Triton share the cores:
    idle threads must sleep (onnxruntime) and move off a busy core (OpenVINO unpinned)."""
    opts: dict[str, Any] = dict(recorded or {})
    opts["device"] = config.device
    if backend == "onnxruntime":
        opts["provider"] = config.provider
        opts.setdefault("spinning", False)
    elif config.provider:
        raise ConfigError(f"--provider applies to the onnxruntime backend only, not {backend}")
    if backend == "openvino":
        opts.setdefault("pinning", False)
    return {k: v for k, v in opts.items() if v is not None}


def inspect_engine(config: ServeConfig):
    """Open the artefact exactly as ``infer`` does (same refusals, same messages), then close it."""
    from bonedeploy.infer.run import InferConfig, open_engine

    probe = InferConfig(engine=Path(config.engine), inputs=(Path("."),), backend=config.backend,
                        device=config.device, provider=config.provider, workers=0)
    backend = open_engine(probe)
    try:
        desc = {**backend.describe(), "gives_ood_score": backend.gives_ood_score}
        fixed = getattr(backend, "_fixed_batch", None)
        profile = desc.get("profile_batch")
        profile_max = int(profile[1]) if profile else (int(fixed) if fixed else None)
        return backend.card, backend.name, desc, profile_max, backend.choice
    finally:
        backend.close()


def prepare(config: ServeConfig, dist) -> Prepared:
    from bonedeploy.serve.runtime import prepare_backends
    from bonedeploy.util.fs import sha256_file

    card, backend_name, desc, profile_max, choice = inspect_engine(config)
    max_batch = resolve_max_batch(config.max_batch, profile_max, config.engine)
    workdir = Path(tempfile.mkdtemp(prefix="bonedeploy-serve-"))
    try:
        repo = workdir / "models"
        spec = {"artefact": str(Path(config.engine).resolve()), "backend": backend_name,
                "options": backend_options(config, backend_name, choice.options),
                "max_request_mb": config.max_request_mb, "ood": bool(desc.get("gives_ood_score"))}
        params = card_parameters(card, sha256_file(config.engine))
        prep = Prepared(card, desc, choice, max_batch, profile_max, repo,
                        prepare_backends(dist, workdir / "backends"), workdir)
        for name, cfg, cls in serve_models(config, card, max_batch, params, spec["ood"]):
            prep.configs[name] = write_python_model(repo, cfg, cls, spec)
        return prep
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def serve_models(config: ServeConfig, card, max_batch: int, params: dict[str, str], ood: bool = False):
    """``NAME`` and ``NAME_file``; both return ``ood_score`` when the artefact computes it (the
    card's OOD gate), and ``NAME_file``'s status then refuses what the gate refuses."""
    k = len(card.classes)
    score = (TensorSpec(OOD_OUTPUT, "TYPE_FP32", (1,)),) if ood else ()
    common = dict(backend="python", max_batch_size=max_batch, max_queue_delay_us=config.max_queue_delay_us,
                  instances=config.instances, kind="KIND_CPU", parameters=params)
    yield config.name, ModelConfig(
        name=config.name, inputs=(TensorSpec(P.IMAGE, "TYPE_FP32", card.preprocess.input_shape),),
        outputs=(TensorSpec(P.LOGITS, "TYPE_FP32", (k,)), TensorSpec(P.PROBS, "TYPE_FP32", (k,)), *score),
        **common), "TensorModel"
    yield P.file_model(config.name), ModelConfig(
        name=P.file_model(config.name), inputs=(TensorSpec(P.FILE, "TYPE_STRING", (1,)),),
        outputs=(TensorSpec(P.PROBS, "TYPE_FP32", (k,)), TensorSpec(P.LOGITS, "TYPE_FP32", (k,)),
                 TensorSpec(P.LABEL, "TYPE_STRING", (1,)), TensorSpec(P.STATUS, "TYPE_STRING", (1,)), *score),
        **common), "FileModel"


def write_python_model(repo: Path, cfg: ModelConfig, cls: str, spec: dict[str, Any]) -> str:
    version = repo / cfg.name / "1"
    version.mkdir(parents=True)
    from bonedeploy.serve.runtime import package_root

    # The stub's embedded interpreter does not see PYTHONPATH: name the bonedeploy that serves.
    (version / "model.py").write_text(
        "# Written by `bonedeploy serve`; the model lives in bonedeploy.serve.python_model.\n"
        f"import sys\nsys.path.insert(0, {str(package_root())!r})\n"
        f"from bonedeploy.serve.python_model import {cls} as TritonPythonModel  # noqa: E402,F401\n")
    (version / P.SERVE_SPEC).write_text(json.dumps(spec, indent=2))
    text = cfg.to_pbtxt()
    (repo / cfg.name / "config.pbtxt").write_text(text)
    return text


def startup_banner(config: ServeConfig, prep: Prepared) -> str:
    u, c, n = config.urls(), prep.card, config.name
    ood = f", {OOD_OUTPUT}" if prep.describe.get("gives_ood_score") else ""
    prof = f"engine profile max {prep.profile_max}" if prep.profile_max else "no engine profile"
    where = prep.describe.get("providers") or prep.describe.get("device") or ""
    lines = [
        f"bonedeploy serve: {Path(config.engine).name} ({c.model}, {c.precision}, classes "
        f"{', '.join(c.classes)}) on {prep.describe.get('backend')} {where}".rstrip(),
        f"  HTTP     {u['http']}   (KServe v2: /v2/models/{n}/infer, /v2/models/{P.file_model(n)}/infer)",
        f"  gRPC     {u['grpc']}",
        f"  metrics  {u['metrics']}",
        f"  health   {u['http']}/v2/health/live  {u['http']}/v2/health/ready",
        f"  models   {n} ({P.IMAGE} FP32 [-1, {', '.join(map(str, c.preprocess.input_shape))}] -> "
        f"{P.LOGITS}, {P.PROBS}{ood}); {P.file_model(n)} ({P.FILE} BYTES [-1, 1] -> {P.PROBS}, {P.LABEL}, "
        f"{P.STATUS}{ood})",
        f"  batching max batch {prep.max_batch} ({prof}), queue delay {config.max_queue_delay_us} us, "
        f"{config.instances} instance(s); requests up to {config.max_request_mb:g} MB",
        f"  client   bonedeploy infer --engine {u['grpc']}/{n} IMAGES/",
    ]
    if prep.choice.warning:
        lines.insert(1, f"  warning  {prep.choice.warning}")
    lines.insert(1, f"  runtime  {prep.describe.get('backend')}: {prep.choice.how}")
    if config.host not in (LOOPBACK, "localhost", "::1"):
        lines.append(f"  warning  bound to {config.host}: Triton has no authentication; put it behind a "
                     "TLS + auth gateway (see the README's Serve section)")
    lines.append("ready; Ctrl-C or SIGTERM stops it")
    return "\n".join(lines)


# --- the server process -------------------------------------------------------------------------

def triton_command(config: ServeConfig, dist, prep: Prepared) -> list[str]:
    h = config.host
    return [str(dist.binary), f"--model-repository={prep.repo}", f"--backend-directory={prep.backends}",
            f"--http-address={h}", f"--grpc-address={h}", f"--metrics-address={h}",
            f"--http-port={config.http_port}", f"--grpc-port={config.grpc_port}",
            f"--metrics-port={config.metrics_port}", "--model-control-mode=none", "--strict-readiness=true",
            f"--exit-timeout-secs={TRITON_EXIT_TIMEOUT_S}", "--log-verbose=0"]


def _child_setup() -> None:
    """New session (so the stubs die with it) and die with this process, even on SIGKILL."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Supervisor:
    def __init__(self, config: ServeConfig, dist, prep: Prepared):
        self.config, self.dist, self.prep = config, dist, prep
        self.proc: subprocess.Popen | None = None
        self.stop = threading.Event()
        self.log_path = prep.workdir / "tritonserver.log"
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Supervisor":
        from bonedeploy.serve.runtime import server_env

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: the caller stops us
                self._old[sig] = signal.signal(sig, lambda *_: self.stop.set())
        out = None if self.config.verbose else open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(triton_command(self.config, self.dist, self.prep),
                                         env=server_env(self.dist), stdout=out, stderr=subprocess.STDOUT if out else None,
                                         stdin=subprocess.DEVNULL, preexec_fn=_child_setup)
        finally:
            if out:
                out.close()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.shutdown()
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)

    def wait_ready(self) -> None:
        url = f"http://{self.config.client_host}:{self.config.http_port}/v2/models/"
        deadline = time.monotonic() + self.config.ready_timeout_s
        names = (self.config.name, P.file_model(self.config.name))
        while time.monotonic() < deadline:
            if self.stop.is_set():
                raise ServeError("interrupted while the server was starting")
            if self.proc.poll() is not None:
                raise ServeError(self._died(f"tritonserver exited with status {self.proc.returncode} "
                                            "while starting"))
            if all(_http_ok(url + n + "/ready") for n in names):
                return
            time.sleep(0.2)
        raise ServeError(self._died(f"the server was not ready after {self.config.ready_timeout_s:.0f} s"))

    def run_until_stopped(self) -> int:
        while not self.stop.wait(0.25):
            if self.proc.poll() is not None:
                raise ServeError(self._died(f"tritonserver stopped unexpectedly (status {self.proc.returncode})"))
        return 0

    def shutdown(self) -> None:
        """SIGTERM (Triton drains for TRITON_EXIT_TIMEOUT_S), then SIGKILL the whole group."""
        p = self.proc
        if p is None:
            return
        deadline = time.monotonic() + SHUTDOWN_S - 1.0
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # stubs left behind, or Triton itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(2.0)
        self.proc = None

    def _died(self, what: str) -> str:
        tail = _tail(self.log_path)
        for port, opt in ((self.config.http_port, "http"), (self.config.grpc_port, "grpc"),
                          (self.config.metrics_port, "metrics")):
            if "address already in use" in tail.lower() and str(port) in tail:
                return f"port {port} on {self.config.host} is already in use ({opt}); choose another with --{opt}-port"
        hint = "" if self.config.verbose else f"\n--- last lines of the Triton log ---\n{tail}"
        return what + hint


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 12) -> str:
    """Triton's error lines (E...: why a model failed to load), then the last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln[:500] for ln in text if ln.startswith("E") and "CudaDriverHelper" not in ln]
    return "\n".join(errors[-8:] + text[-lines:])
