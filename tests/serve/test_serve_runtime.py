"""The bundled Triton's environment: which numpy its Python-backend stub can run (no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bonedeploy.errors import BackendUnavailableError
from bonedeploy.serve.runtime import TritonDist, check_stub_numpy, stub_supports_numpy2


def fake_dist(tmp_path: Path, stub_bytes: bytes) -> TritonDist:
    root = tmp_path / "tritonserver"
    dist = TritonDist(root, root / "bin" / "tritonserver", tmp_path / "libs")
    dist.stub().parent.mkdir(parents=True)
    dist.stub().write_bytes(b"\x7fELF..." + stub_bytes + b"...")
    return dist


def test_a_stub_built_for_numpy1_is_refused_under_numpy2_in_one_line_naming_the_fix(tmp_path):
    # pybind11 < 2.12 knows only numpy.core: what nvidia-pytriton 0.7.0's stubs contain.
    dist = fake_dist(tmp_path, b"numpy.core.multiarray\x00_ARRAY_API")
    assert not stub_supports_numpy2(dist.stub())
    check_stub_numpy(dist, "1.26.4")  # numpy 1: serves
    with pytest.raises(BackendUnavailableError) as e:
        check_stub_numpy(dist, "2.4.6")
    msg = str(e.value)
    assert "\n" not in msg
    assert "numpy 2.4.6 is installed" in msg and "built for numpy 1" in msg
    assert "fix: pip install 'numpy<2'" in msg


def test_a_stub_that_knows_numpy2_serves_under_numpy2(tmp_path):
    dist = fake_dist(tmp_path, b"numpy._core\x00numpy.core\x00multiarray")
    assert stub_supports_numpy2(dist.stub())
    check_stub_numpy(dist, "2.4.6")


def test_serve_refuses_under_numpy2_before_it_binds_or_writes_anything(monkeypatch, tmp_path):
    """The check runs first in run_server: no port probed, no engine opened, no process started."""
    pytest.importorskip("pytriton", reason="needs the [serve] extra (nvidia-pytriton)")
    import numpy

    from bonedeploy.serve import server
    from bonedeploy.serve.runtime import find_triton

    if stub_supports_numpy2(find_triton().stub()):
        pytest.skip("this nvidia-pytriton's stub runs numpy 2: nothing to refuse")

    def must_not_run(*a, **k):
        raise AssertionError("reached past the numpy check")

    monkeypatch.setattr(numpy, "__version__", "2.4.6")
    monkeypatch.setattr(server, "check_ports_free", must_not_run)
    monkeypatch.setattr(server, "prepare", must_not_run)
    with pytest.raises(BackendUnavailableError, match=r"numpy 2\.4\.6 is installed.*nvidia-pytriton"):
        server.run_server(server.ServeConfig(engine=tmp_path / "model.onnx"))


# --- which runtime serve runs, and how it shares the cores (no server started) ----------------

def prepared(engine: Path, **config):
    pytest.importorskip("pytriton", reason="needs the [serve] extra (nvidia-pytriton)")
    from bonedeploy.serve.runtime import find_triton
    from bonedeploy.serve.server import ServeConfig, prepare, startup_banner

    cfg = ServeConfig(engine=engine, **config)
    prep = prepare(cfg, find_triton())
    spec = json.loads((prep.repo / cfg.name / "1" / "serve.json").read_text())
    return prep, spec, startup_banner(cfg, prep)


@pytest.fixture
def onnx(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    from onnxkit import tiny_onnx_classifier

    return tiny_onnx_classifier(tmp_path / "model.int8.onnx")


def record(onnx: Path, backend: str, options: dict) -> Path:
    """A valid `bench --select` record for this file on this machine."""
    from bonedeploy.backends import select
    from bonedeploy.backends.modelcache import artefact_sha256
    from bonedeploy.util.fs import write_json
    from bonedeploy.util.machine import machine_slug

    path = select.record_path(onnx)
    write_json(path, {"format": select.FORMAT, "artefact": onnx.name, "sha256": artefact_sha256(onnx),
                      "backend": backend, "options": options, "created": "2026-12-04T14:36:59+00:00",
                      "machine": {"slug": machine_slug()}})
    return path


def test_without_a_record_serve_runs_onnxruntime_says_why_and_its_threads_sleep(onnx):
    prep, spec, banner = prepared(onnx)
    try:
        assert spec["backend"] == "onnxruntime" and spec["options"]["spinning"] is False
        assert "  runtime  onnxruntime: default for the suffix (no runtime record" in banner
        assert "2 instance(s)" in banner and "count: 2" in prep.configs["bonedeploy"]
    finally:
        shutil.rmtree(prep.workdir)


def test_with_the_select_record_serve_runs_openvino_as_infer_does(onnx):
    pytest.importorskip("openvino", reason="needs the [openvino] extra")
    record(onnx, "openvino", {"hint": "latency"})
    prep, spec, banner = prepared(onnx)
    try:
        assert spec["backend"] == "openvino" and prep.describe["backend"] == "openvino"
        # the record's options as infer runs them, and unpinned threads (they share the cores)
        assert spec["options"] == {"hint": "latency", "pinning": False}
        assert "  runtime  openvino: model.int8.onnx.runtime.json (measured 2026-12-04T14:36:59+00:00" in banner
    finally:
        shutil.rmtree(prep.workdir)


def test_a_record_for_another_file_is_ignored_with_the_reason_on_the_banner(onnx):
    record(onnx, "openvino", {})
    rec = json.loads(onnx.with_name(onnx.name + ".runtime.json").read_text())
    rec["sha256"] = "0" * 64
    onnx.with_name(onnx.name + ".runtime.json").write_text(json.dumps(rec))
    prep, spec, banner = prepared(onnx)
    try:
        assert spec["backend"] == "onnxruntime"
        assert "  warning  " in banner and "measured on another file" in banner
    finally:
        shutil.rmtree(prep.workdir)
