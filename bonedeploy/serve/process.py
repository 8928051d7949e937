"""``bonedeploy serve`` in a child process on free loopback ports: for tests and benchmarks.

Always bounded (start-up timeout) and always stopped: leaving the context sends SIGTERM, waits
out the server's own shutdown bound, then SIGKILLs the whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from bonedeploy.serve.server import LOOPBACK, SHUTDOWN_S, ServeError


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct ports the kernel says are free now (held open together, so distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    def __init__(self, engine: str | Path, name: str = "bonedeploy", extra: Sequence[str] = (),
                 timeout_s: float = 180.0, env: dict[str, str] | None = None, cwd: str | Path | None = None):
        self.engine, self.name, self.extra = Path(engine), name, list(extra)
        self.timeout_s = timeout_s
        self.env, self.cwd = env, cwd
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    @property
    def http(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def url(self, scheme: str = "grpc") -> str:
        return f"{scheme}://{self.grpc if scheme == 'grpc' else self.http}/{self.name}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bonedeploy", "serve", str(self.engine), "--name", self.name,
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--metrics-port", str(self.metrics_port), *self.extra]

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + self.timeout_s
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServeError("bonedeploy serve did not become ready:\n" + "".join(self.output[-30:]))
        return self

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.output.append(line)
            if line.startswith("ready;"):
                self._ready.set()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.signal(signal.SIGTERM)
            rc = self.wait(SHUTDOWN_S + 2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if rc is None:
            rc = self.wait(5)
        return rc

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
