"""Where the bundled ``tritonserver`` lives and the environment it must run in.

PyPI's ``nvidia-pytriton`` ships a real ``tritonserver`` with its Python backend and one backend
stub per Python version. The stub links ``libpython3.X.so`` by soname; on hosts whose interpreter
is not the system one (pyenv, conda) the loader would pick the system library while the stdlib
comes from the running interpreter, and the stub dies (``'_thread.RLock' object has no attribute
'_recursion_count'``). So the running interpreter's LIBDIR goes first on ``LD_LIBRARY_PATH``, its
``bin`` first on ``PATH`` (the stub finds its prefix, hence site-packages, from there), and this
package's root on ``PYTHONPATH``: the user's shell needs nothing.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from bonedeploy.errors import BackendUnavailableError

INSTALL_HINT = "pip install 'bonedeploy[serve]' (nvidia-pytriton, tritonclient[http,grpc])"


@dataclass(frozen=True)
class TritonDist:
    root: Path  # pytriton/tritonserver
    binary: Path
    libs: Path  # the wheel's vendored shared libraries

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub(self, version: str | None = None) -> Path:
        version = version or f"{sys.version_info[0]}.{sys.version_info[1]}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def find_triton() -> TritonDist:
    """The ``tritonserver`` bundled with nvidia-pytriton, or a clear error saying what to install."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"bonedeploy serve needs the bundled Triton server: {INSTALL_HINT}")
    pkg = Path(list(spec.submodule_search_locations)[0])
    dist = TritonDist(pkg / "tritonserver", pkg / "tritonserver" / "bin" / "tritonserver",
                      pkg.parent / "nvidia_pytriton.libs")
    if not dist.binary.is_file() or not dist.stub().is_file():
        raise BackendUnavailableError(f"{dist.root}: no tritonserver binary or no Python-backend stub "
                                      f"for Python {sys.version_info[0]}.{sys.version_info[1]}; {INSTALL_HINT}")
    return dist


def prepare_backends(dist: TritonDist, into: Path) -> Path:
    """A backend directory whose Python backend has this interpreter's stub (links, no copies)."""
    py = into / "python"
    py.mkdir(parents=True, exist_ok=True)
    for src in (dist.python_backend / "libtriton_python.so",
                dist.python_backend / "triton_python_backend_utils.py", dist.stub()):
        dst = py / src.name
        if not dst.exists():
            dst.symlink_to(src)
    return into


def package_root() -> Path:
    import bonedeploy

    return Path(bonedeploy.__file__).resolve().parent.parent


def server_env(dist: TritonDist, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    env["LD_LIBRARY_PATH"] = _prepend(env.get("LD_LIBRARY_PATH"), libdir, str(dist.libs))
    env["PATH"] = _prepend(env.get("PATH"), str(Path(sys.executable).parent))
    env["PYTHONPATH"] = _prepend(env.get("PYTHONPATH"), str(package_root()))
    env.setdefault("OMP_NUM_THREADS", "1")  # the runtime sets its own thread pool
    return env


def _prepend(current: str | None, *first: str | None) -> str:
    parts = [p for p in first if p]
    parts += [p for p in (current or "").split(os.pathsep) if p and p not in parts]
    return os.pathsep.join(parts)
