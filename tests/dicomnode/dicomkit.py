"""Real DICOM software for the node's tests: Orthanc (the PACS), DCMTK and pynetdicom (senders),
each started on free loopback ports with temporary storage, bounded in time, always stopped.

In CI (``CI`` set) a missing tool fails the test instead of skipping it: a green CI must not
hide a missing install step (``.ci/dicom-deps.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} is not installed (apt-get install dcmtk orthanc; see .ci/dicom-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Orthanc:
    """A throw-away Orthanc: DICOM and HTTP on free loopback ports, storage under ``root``."""

    def __init__(self, root: Path, aet: str = "ORTHANC", **config):
        self.root, self.aet, self.extra = Path(root), aet, config
        self.dicom_port, self.http_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.aet}@{LOOPBACK}:{self.dicom_port}"

    def start(self) -> "Orthanc":
        exe = need("Orthanc")
        self.root.mkdir(parents=True, exist_ok=True)
        config = {"Name": "bonedeploy-test", "StorageDirectory": str(self.root / "db"),
                  "IndexDirectory": str(self.root / "db"), "DicomAet": self.aet,
                  "DicomPort": self.dicom_port, "HttpPort": self.http_port, "HttpServerEnabled": True,
                  "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
                  "DicomAlwaysAllowStore": True, "Plugins": [], "StableAge": 1, "HttpTimeout": 10,
                  **self.extra}
        (self.root / "orthanc.json").write_text(json.dumps(config))
        log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([exe, str(self.root / "orthanc.json")], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        wait_until(lambda: self._alive(), 30, "Orthanc to answer")
        return self

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited ({self.proc.returncode}): "
                                 f"{(self.root / 'orthanc.log').read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=10) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(f"http://{LOOPBACK}:{self.http_port}{path}",
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def delete(self, path: str) -> None:
        req = urllib.request.Request(f"http://{LOOPBACK}:{self.http_port}{path}", method="DELETE")
        urllib.request.urlopen(req, timeout=10).close()

    def find(self, modality: str | None = None, **query: str) -> list[dict]:
        q = dict(query)
        if modality:
            q["Modality"] = modality
        return self.post("/tools/find", {"Level": "Instance", "Query": q, "Expand": True})

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get(f"/instances/{orthanc_id}/file")

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Node:
    """``bonedeploy listen`` as a subprocess (as an administrator runs it)."""

    def __init__(self, engine: Path, spool: Path, *args: str, aet: str = "BONEDEPLOY", port: int | None = None):
        self.engine, self.spool, self.args, self.aet = engine, Path(spool), list(args), aet
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.stderr = self.spool.parent / f"{self.spool.name}.stderr.log"

    def start(self, timeout: float = 60) -> "Node":
        cmd = [sys.executable, "-m", "bonedeploy", "listen", str(self.engine), "--spool", str(self.spool),
               "--ae-title", self.aet, "--port", str(self.port), *self.args]
        err = open(self.stderr, "ab")
        self._from = err.tell()  # a restart appends: only its own lines say it is ready
        self.proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
        wait_until(self._ready, timeout, "bonedeploy listen to accept associations", every=0.2)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"bonedeploy listen exited ({self.proc.returncode}): {self.log()[-3000:]}")
        return b"listening as" in self.stderr.read_bytes()[self._from:]

    def log(self) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.is_file() else ""
        node_log = self.spool / "node.log"
        return text + (node_log.read_text(errors="replace") if node_log.is_file() else "")

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "bonedeploy", "listen", "--status", "--spool", str(self.spool)],
                             capture_output=True, text=True, timeout=60, cwd=REPO, check=True)
        return json.loads(out.stdout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)
            self.proc = None

    def __enter__(self) -> "Node":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def storescu(port: int, files: list[Path], aet: str = "BONEDEPLOY", calling: str = "MODALITY",
             timeout: float = 120, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """DCMTK's storescu (by default it proposes the uncompressed syntaxes; ``-R``: each file's own)."""
    exe = need("storescu")
    return subprocess.run([exe, "-aet", calling, "-aec", aet, "-to", "30", "-ta", "30", "-td", "30", *options,
                           LOOPBACK, str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=timeout)


def echoscu(port: int, aet: str = "BONEDEPLOY", calling: str = "MODALITY") -> subprocess.CompletedProcess:
    return subprocess.run([need("echoscu"), "-aet", calling, "-aec", aet, "-to", "10", LOOPBACK, str(port)],
                          capture_output=True, text=True, timeout=60)


def pynetdicom_storescu(port: int, files: list[Path], aet: str = "BONEDEPLOY") -> subprocess.CompletedProcess:
    """pynetdicom's own storescu application (``python -m pynetdicom storescu``)."""
    return subprocess.run([sys.executable, "-m", "pynetdicom", "storescu", LOOPBACK, str(port),
                           *map(str, files), "-aet", "PYNETDICOM", "-aec", aet, "-cx"],
                          capture_output=True, text=True, timeout=120)


def send(port: int, datasets, aet: str = "BONEDEPLOY", calling: str = "TESTSCU") -> list[int | None]:
    """C-STORE each dataset on one association (pynetdicom SCU); the status of each, None when
    the association failed before it got one."""
    from pynetdicom import AE
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for cls in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(cls, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(LOOPBACK, port, ae_title=aet)
    statuses: list[int | None] = []
    if not assoc.is_established:
        return [None] * len(datasets)
    try:
        for ds in datasets:
            if not assoc.is_established:
                statuses.append(None)
                continue
            st = assoc.send_c_store(ds)
            statuses.append(int(st.Status) if st else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


@contextlib.contextmanager
def running(*servers) -> Iterator[None]:
    try:
        yield
    finally:
        for s in servers:
            s.stop()


def tiny_explain_onnx(path: Path, classifier: Path) -> Path:
    """A ``model.explain.onnx`` for the tiny classifier: its logits, and as 'cam' the input image
    itself for each class (a map that is easy to recognise in the overlay)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(classifier)
    g = model.graph
    g.node.append(helper.make_node("Concat", ["input", "input"], ["cam"], axis=1))
    g.output.append(helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", 2, None, None]))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
