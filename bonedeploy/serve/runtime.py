"""Where the bundled ``tritonserver`` lives and the environment it must run in.

PyPI's ``nvidia-pytriton`` ships a real ``tritonserver`` with its Python backend and one backend
stub per Python version. The stub links ``libpython3.X.so`` by soname; on hosts whose interpreter
is not the system one (pyenv, conda) the loader would pick the system library while the stdlib
comes from the running interpreter, and the stub dies (``'_thread.RLock' object has no attribute
'_recursion_count'``). So the running interpreter's LIBDIR goes first on ``LD_LIBRARY_PATH``, its
``bin`` first on ``PATH`` (the stub finds its prefix, hence site-packages, from there), and this
package's root on ``PYTHONPATH``: the user's shell needs nothing.

The stub wraps every tensor in a numpy array through the pybind11 it was compiled with. Before
pybind11 2.12 that code reads the item size at numpy 1's ``PyArray_Descr`` offset; under numpy 2 it
reads 0 there, so tensor outputs go out empty and the bytes of a file request are all read as their
first byte (the stub dies: "Stub process ... is not healthy"). nvidia-pytriton 0.7.0's stubs are of
that kind, so ``serve`` refuses such a pairing before it opens a port (``check_stub_numpy``).
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


# pybind11 >= 2.12 imports ``numpy._core`` under numpy 2; older builds know only ``numpy.core``.
NUMPY2_MARKER = b"numpy._core"


def stub_supports_numpy2(stub: Path) -> bool:
    """Whether the stub's pybind11 knows numpy 2's layout (the marker is in its read-only data)."""
    return NUMPY2_MARKER in stub.read_bytes()


def check_stub_numpy(dist: TritonDist, numpy_version: str | None = None) -> None:
    """Refuse, in one line naming the conflict and the fix, a stub that cannot run this numpy."""
    if numpy_version is None:
        import numpy

        numpy_version = numpy.__version__
    if int(numpy_version.split(".")[0]) < 2 or stub_supports_numpy2(dist.stub()):
        return
    raise BackendUnavailableError(
        f"bonedeploy serve: numpy {numpy_version} is installed, but the Triton Python-backend stub of "
        f"nvidia-pytriton {_version('nvidia-pytriton')} was built for numpy 1 (it would answer with empty "
        f"tensors and crash on file bytes); fix: pip install {' '.join(_numpy1_fix())}")


def _numpy1_fix() -> list[str]:
    """The pins that bring numpy 1 back without breaking what [explain] installed for numpy 2."""
    fix = ["'numpy<2'"]
    cv = _version("opencv-python-headless")
    if cv[0].isdigit() and tuple(int(p) for p in cv.split(".")[:2]) >= (4, 12):  # built for numpy >= 2 only
        fix.append("'opencv-python-headless<4.12'")
    return fix


def _version(dist_name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist_name)
    except PackageNotFoundError:
        return "?"


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
