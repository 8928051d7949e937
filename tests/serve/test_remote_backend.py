"""The triton backend's URL handling and registry entry (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bonedeploy.backends import backend_for_path, is_remote
from bonedeploy.errors import BackendUnavailableError, ConfigError
from bonedeploy.infer.run import InferConfig


def test_grpc_and_http_urls_select_the_triton_backend_even_after_path():
    from bonedeploy.backends.triton import TritonBackend, parse_url

    for url in ("grpc://10.0.0.5:8001/elbow", Path("grpc://10.0.0.5:8001/elbow"), "http://h:8000/elbow"):
        assert is_remote(url) and backend_for_path(url) is TritonBackend
    assert parse_url(Path("grpc://10.0.0.5:8001/elbow")) == ("grpc", "10.0.0.5:8001", "elbow")
    assert parse_url("http://server/elbow") == ("http", "server:8000", "elbow")
    assert not is_remote("runs/model.onnx") and not is_remote("/abs/model.trt")
    b = TritonBackend(Path("grpc://h:1/m"))  # the URL is its source, no fake file path
    assert b.source == b.label == "grpc://h:1/m" and b.model == "m" and not hasattr(b, "path")


def test_bad_urls_and_misplaced_options_list_the_valid_choices():
    from bonedeploy.backends.triton import TritonBackend

    with pytest.raises(ConfigError, match="no backend for ftp:// URLs; known schemes: grpc, http"):
        backend_for_path("ftp://h/m")
    with pytest.raises(ConfigError, match="grpc://HOST:PORT/NAME"):
        TritonBackend("grpc://hostonly")
    with pytest.raises(ConfigError, match="valid options: remote_decode"):
        TritonBackend("grpc://h:1/m", provider="cpu")
    with pytest.raises(ConfigError, match="--remote-decode applies to grpc:// or http://"):
        InferConfig(engine=Path("m.onnx"), inputs=(Path("."),), remote_decode=True).backend_options("onnxruntime")


def test_an_unreachable_server_is_one_clear_error():
    pytest.importorskip("tritonclient.grpc", reason="needs the [serve] extra (tritonclient)")
    from bonedeploy.backends.triton import TritonBackend
    from bonedeploy.serve.process import free_ports

    port = free_ports(1)[0]
    with pytest.raises(BackendUnavailableError, match=f"grpc://127.0.0.1:{port}/m: cannot reach"):
        TritonBackend(f"grpc://127.0.0.1:{port}/m").load()
