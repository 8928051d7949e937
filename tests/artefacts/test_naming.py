"""Artefact file names: the engine suffixes are one tuple, and every reader of engines uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bonedeploy.artefacts import naming

PKG = Path(__file__).resolve().parents[2] / "bonedeploy"


def test_engines_are_written_with_the_first_suffix():
    assert naming.ENGINE_SUFFIX == naming.ENGINE_SUFFIXES[0] == ".trt"
    assert naming.engine_path_for("runs/a/model.fp16.onnx").suffix == naming.ENGINE_SUFFIX


def test_every_reader_of_engines_takes_every_suffix():
    from bonedeploy.backends import backend_for_path, get_backend
    from bonedeploy.bench import targets

    assert get_backend("tensorrt").suffixes == naming.ENGINE_SUFFIXES
    for suffix in naming.ENGINE_SUFFIXES:
        assert backend_for_path(f"m{suffix.upper()}").name == "tensorrt"
        assert [t.backend for t in targets.targets_for_path(f"m{suffix}")] == ["tensorrt"]


def test_the_triton_repository_takes_every_engine_suffix():
    pytest.importorskip("onnx")
    from bonedeploy.export.triton_repo import REPO_FORMATS

    plans = {s for s, fmt in REPO_FORMATS.items() if fmt[0] == "tensorrt_plan"}
    assert plans == set(naming.ENGINE_SUFFIXES)


def test_no_module_spells_the_engine_suffixes_itself():
    """A literal ".engine" or ".plan" outside naming.py is a second list that will drift."""
    found = []
    for path in PKG.rglob("*.py"):
        if path.name == "naming.py" and path.parent.name == "artefacts":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in naming.ENGINE_SUFFIXES:
                found.append(f"{path.relative_to(PKG)}:{node.lineno} {node.value!r}")
    assert not found, found
