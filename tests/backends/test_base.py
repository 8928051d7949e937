"""The Backend base class, for every registered backend: declared options checked once (unknown
and invalid values list the valid ones), defaults that pass their own check, cheap construction,
and a load()/close() lifecycle that is the base's bookkeeping only (no backend overrides it, the
base demands no file, FileBackend checks its file before any runtime is touched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.backends import Backend, FileBackend, get_backend, list_backends
from bonedeploy.backends.options import Option, check_options
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.errors import ArtefactError, ConfigError

BACKENDS = list_backends()
RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt", "tritonclient", "pycuda", "cuda")


def source_for(cls: type[Backend], tmp_path: Path | None = None) -> str:
    """Something the constructor accepts: a URL for a remote backend, else a file name."""
    if cls.schemes:
        return f"{cls.schemes[0]}://127.0.0.1:1/m"
    suffix = cls.suffixes[0] if cls.suffixes else ".bin"
    return str((tmp_path or Path("/nonexistent")) / f"model{suffix}")


def test_every_backend_module_is_registered():
    assert {"torch", "onnxruntime", "openvino", "tensorrt", "triton"} <= set(BACKENDS)


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_option_is_refused_listing_every_declared_one(name):
    cls = get_backend(name)
    declared = [o.name for o in cls.declared_options()]
    with pytest.raises(ConfigError, match=rf"{name} backend: unknown options \['colour'\]; valid options: "
                                          + ", ".join(declared) + "$"):
        cls(source_for(cls), colour="blue")
    cls(source_for(cls), colour=None)  # None means "not given": callers pass device=None to all


@pytest.mark.parametrize("name", BACKENDS)
def test_declared_options_have_help_and_defaults_that_pass_their_own_check(name):
    cls = get_backend(name)
    opts = cls.declared_options()
    assert len({o.name for o in opts}) == len(opts) and "batch_size" in {o.name for o in opts}
    for o in opts:
        assert o.help.strip(), o.name
        assert o.parse(o.default, name) == o.default, o.name
        if o.choices:
            assert o.default is None or o.default in o.choices, o.name
    backend = cls(source_for(cls))
    assert backend.options == {o.name: o.default for o in opts}


@pytest.mark.parametrize("name", BACKENDS)
def test_a_bad_value_names_the_option_and_lists_the_valid_choices(name):
    cls = get_backend(name)
    for o in cls.declared_options():
        if o.choices:
            with pytest.raises(ConfigError, match=rf"{name} backend: {o.name} 'nonsense'.*; valid: "
                                                  + ", ".join(o.choices)):
                cls(source_for(cls), **{o.name: "nonsense"})
        elif o.type in (int, float, bool):
            with pytest.raises(ConfigError, match=rf"{name} backend: {o.name} 'many'; (expected|valid)"):
                cls(source_for(cls), **{o.name: "many"})


def test_string_values_parse_to_the_declared_type():
    """What ``--backend-option KEY=VALUE`` and selection records pass."""
    o = check_options("x", (Option("n", "h", type=int, minimum=1), Option("f", "h", True, type=bool),
                            Option("t", "h", 1.0, type=float), Option("c", "h", "a", choices=("a", "b"),
                                                                      aliases={"bee": "b"})),
                      {"n": " 2 ", "f": "off", "t": "2.5", "c": "BEE"})
    assert o == {"n": 2, "f": False, "t": 2.5, "c": "b"}
    for bad in ("0", "1.5", True):
        with pytest.raises(ConfigError, match="n .*expected a positive integer"):
            check_options("x", (Option("n", "h", type=int, minimum=1),), {"n": bad})


def test_an_option_describes_itself_in_one_line():
    assert Option("threads", "intra-op threads", type=int).describe() == "threads (int): intra-op threads"
    assert Option("hint", "the hint", "latency", choices=("latency", "throughput")).describe() == (
        "hint (latency|throughput, default latency): the hint")


def test_constructing_every_backend_imports_no_runtime():
    """In a fresh interpreter: sys.modules before and after constructing each backend."""
    code = (
        "import sys\n"
        "from bonedeploy.backends import get_backend, list_backends\n"
        "names = list_backends()\n"
        f"runtimes = {RUNTIMES!r}\n"
        "before = set(sys.modules)\n"
        "for n in names:\n"
        "    cls = get_backend(n)\n"
        "    src = f'{cls.schemes[0]}://127.0.0.1:1/m' if cls.schemes else 'model' + cls.suffixes[0]\n"
        "    b = cls(src)\n"
        "    assert not b.loaded, n\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "loaded = sorted(r for r in runtimes if r in {m.split('.')[0] for m in sys.modules})\n"
        "print(sorted(new & set(runtimes)), loaded)\n"
        "sys.exit(1 if loaded else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", BACKENDS)
def test_no_backend_overrides_the_lifecycle_bookkeeping(name):
    cls = get_backend(name)
    for method in ("load", "close", "__enter__", "__exit__", "infer"):
        assert getattr(cls, method) is getattr(Backend, method), f"{name} overrides {method}()"


@pytest.mark.parametrize("name", BACKENDS)
def test_load_twice_is_idempotent_and_the_context_manager_closes(name, monkeypatch, tmp_path):
    """The base's bookkeeping, for every backend: the runtime part (_load/_close) is replaced by
    counters, so no runtime is needed."""
    cls = get_backend(name)
    calls = {"load": 0, "close": 0}

    def fake_load(self):
        calls["load"] += 1
        self._card = ModelCard("m", preprocess=PreprocessSpec(crop_size=8))

    monkeypatch.setattr(cls, "_load", fake_load)
    monkeypatch.setattr(cls, "_close", lambda self: calls.__setitem__("close", calls["close"] + 1))
    backend = cls(source_for(cls, tmp_path))
    assert backend.load() is backend and backend.load() is backend and calls["load"] == 1
    backend.close()
    backend.close()
    assert calls["close"] == 1 and not backend.loaded
    with backend as b:
        assert b is backend and b.loaded
    assert not backend.loaded and calls == {"load": 2, "close": 2}


class Remote(Backend):
    """A backend whose source is not a file (a test double for a server)."""

    name = "remote-double"

    def _load(self):
        self._card = ModelCard("m", preprocess=PreprocessSpec(crop_size=8))

    def _infer(self, batch):
        return np.zeros((len(batch), 2), np.float32)


class Local(FileBackend):
    name = "file-double"
    suffixes = (".bin",)
    opened = 0

    def _open(self):
        Local.opened += 1
        self._card = ModelCard("m", preprocess=PreprocessSpec(crop_size=8))

    def _infer(self, batch):
        return np.zeros((len(batch), 2), np.float32)


def test_the_base_demands_no_file():
    with Remote("svc://somewhere/m") as b:
        assert b.source == "svc://somewhere/m" and b.infer(np.zeros((3, 1, 8, 8))).shape == (3, 2)
    with pytest.raises(ConfigError, match=r"svc://somewhere/m expects N x 1 x 8 x 8 input"):
        Remote("svc://somewhere/m").load().infer(np.zeros((3, 8, 8)))


def test_a_file_backend_checks_its_file_before_opening_it(tmp_path):
    Local.opened = 0
    with pytest.raises(ArtefactError, match=r"absent\.bin: no such file"):
        Local(tmp_path / "absent.bin").load()
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ArtefactError, match=r"empty\.bin: empty file"):
        Local(tmp_path / "empty.bin").load()
    assert Local.opened == 0
    (tmp_path / "m.bin").write_bytes(b"x")
    with Local(tmp_path / "m.bin") as b:
        assert b.path == tmp_path / "m.bin" and b.label == "m.bin" and Local.opened == 1
