"""The cache root: one function owns where caches live and the ``BONEDEPLOY_CACHE_DIR=off`` rule,
and no other module works out a cache location by itself. (The caches' own "off" behaviour is
tested beside each: OpenVINO's in test_openvino, onnxruntime's TensorRT engines in test_onnxrt,
TensorRT's timing cache in tests/export/test_tensorrt.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bonedeploy.backends import modelcache

PKG = Path(__file__).resolve().parents[2] / "bonedeploy"


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("BONEDEPLOY_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_root_is_the_variable_else_xdg_else_home(home, monkeypatch):
    assert modelcache.cache_root() == home / ".cache" / "bonedeploy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    assert modelcache.cache_root() == home / "xdg" / "bonedeploy"
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(home / "mine"))
    assert modelcache.cache_root() == home / "mine"
    assert modelcache.cache_dir("tensorrt-timing") == home / "mine" / "tensorrt-timing"


@pytest.mark.parametrize("off", ["off", "OFF", "0", "none", ""])
def test_off_switches_every_cache_directory_off(home, monkeypatch, off):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", off)
    assert modelcache.cache_root() is None
    assert modelcache.cache_dir("ort-trt") is None and modelcache.cache_dir("tensorrt-timing") is None


def test_off_hashes_without_remembering_and_opens_no_cache(home, monkeypatch):
    from bonedeploy.util.fs import sha256_file

    art = home / "model.onnx"
    art.write_bytes(b"weights")
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", "off")
    assert modelcache.artefact_sha256(art) == sha256_file(art)
    assert modelcache.open_cache(art, "openvino", "1") is None
    assert sorted(p.name for p in home.iterdir()) == ["model.onnx"]


def cache_locations(path: Path) -> list[str]:
    """What, in a module's code (docstrings aside), works out a cache location: the environment
    variables of the rule, or the home directory."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in ("XDG_CACHE_HOME", "BONEDEPLOY_CACHE_DIR"):
            found.append(node.value)
        elif isinstance(node, ast.Attribute) and node.attr == "home":
            found.append("Path.home()")
    return found


def test_only_modelcache_works_out_the_cache_root():
    owners = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if cache_locations(p))
    assert owners == ["backends/modelcache.py"], owners
