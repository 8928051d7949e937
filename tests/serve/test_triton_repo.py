"""The Triton model repository export and the configs ``serve`` writes, parsed with Triton's own
ModelConfig schema (tritonclient's model_config_pb2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bonedeploy.artefacts.sidecar import build_sidecar, write_sidecar
from bonedeploy.cli.app import main
from bonedeploy.errors import ConfigError
from bonedeploy.export.triton_repo import write_triton_repo
from bonedeploy.artefacts.triton import card_from_parameters
from bonedeploy.util.fs import sha256_file
from onnxkit import tiny_card, tiny_onnx_classifier

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs the [serve] extra (tritonclient)")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path: Path):
    return text_format.Parse(Path(path).read_text(), pb.ModelConfig())


def params(cfg) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_onnx_repo_from_the_cli_is_a_valid_triton_model(tmp_path, capsys):
    card = tiny_card(crop=40, precision="int8")
    onnx = tiny_onnx_classifier(tmp_path / "model.int8.onnx", card)
    with _no_exit():
        main(["export", str(onnx), "--triton-repo", str(tmp_path / "repo"), "--name", "elbow"])
    model_dir = tmp_path / "repo" / "elbow"
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx.read_bytes()
    cfg = parse(model_dir / "config.pbtxt")
    assert cfg.name == "elbow" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 32  # a free batch axis: export's default
    assert [(i.name, list(i.dims), i.data_type) for i in cfg.input] == [("input", [1, 40, 40], pb.TYPE_FP32)]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("logits", [2])]
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
    back, sha = card_from_parameters(params(cfg), "test")
    assert back == card and sha == sha256_file(onnx)
    assert "elbow/1/model.onnx" in capsys.readouterr().out


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is SystemExit and exc.code in (0, None)


def fake_engine(tmp_path: Path, max_batch: int) -> Path:
    """A .trt file with a real sidecar: the repository export reads only the sidecar."""
    card = tiny_card(crop=32, precision="fp16")
    onnx = tiny_onnx_classifier(tmp_path / "model.fp16.onnx", card)
    engine = tmp_path / "model.trt"
    engine.write_bytes(b"not a real plan")
    prof = {"input": "image", "min": 1, "opt": 4, "max": max_batch}
    write_sidecar(engine, build_sidecar({}, card, prof, onnx, sha256_file(onnx), "2026-01-01T00:00:00"))
    return engine


def test_plan_repo_caps_max_batch_at_the_engine_profile(tmp_path):
    engine = fake_engine(tmp_path, max_batch=16)
    r = write_triton_repo(engine, tmp_path / "repo")
    cfg = parse(r.config_path)
    assert cfg.platform == "tensorrt_plan" and r.model_path.name == "model.plan"
    assert cfg.max_batch_size == 16
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert list(cfg.input[0].dims) == [1, 32, 32]
    assert write_triton_repo(engine, tmp_path / "repo2", max_batch=8).max_batch_size == 8
    with pytest.raises(ConfigError, match="exceeds the optimisation profile.*max batch 16"):
        write_triton_repo(engine, tmp_path / "repo3", max_batch=17)


def test_bad_name_and_source_are_refused_with_the_valid_choices(tmp_path):
    onnx = tiny_onnx_classifier(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="model name"):
        write_triton_repo(onnx, tmp_path / "r", name="../etc")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"\.engine, \.onnx, \.plan, \.trt"):
        write_triton_repo(tmp_path / "m.pt", tmp_path / "r")


def test_serve_model_configs_parse_and_carry_the_card(tmp_path):
    from bonedeploy.serve.server import ServeConfig, serve_models

    card = tiny_card(crop=24)
    cfg = ServeConfig(engine=tmp_path / "m.onnx", name="bd", max_queue_delay_us=250, instances=2)
    written = {}
    for name, model_cfg, _cls in serve_models(cfg, card, 12, {"bonedeploy.card": json.dumps(card.to_dict())}):
        path = tmp_path / f"{name}.pbtxt"
        path.write_text(model_cfg.to_pbtxt())
        written[name] = parse(path)
    assert set(written) == {"bd", "bd_file"}
    t, f = written["bd"], written["bd_file"]
    assert t.backend == "python" and t.max_batch_size == 12 and list(t.input[0].dims) == [1, 24, 24]
    assert [o.name for o in t.output] == ["logits", "probs"]
    assert f.input[0].data_type == pb.TYPE_STRING and list(f.input[0].dims) == [1]
    assert {o.name for o in f.output} >= {"probs", "label", "status"}
    assert t.dynamic_batching.max_queue_delay_microseconds == 250 and t.instance_group[0].count == 2
    assert card_from_parameters(params(f), "x")[0] == card
