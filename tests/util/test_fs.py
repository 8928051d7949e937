"""Atomic writes: a failure mid-write never leaves a truncated or temporary file behind."""

import os

import pytest

from bonedeploy.util.fs import atomic_path, atomic_write, sha256_file, write_json


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write('{"epoch": 2, "trunc')
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith('{\n  "epoch": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_path_renames_on_success_and_uses_the_umask(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and not target.exists()
            tmp.write_bytes(b"abc")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == 0o644  # mkstemp alone would leave 0600
    assert sha256_file(target) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
