"""The engine sidecar: round trip, and the compatibility check's messages (no TensorRT needed)."""

import pytest

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ArtefactError, IncompatibleEngineError
from bonedeploy.artefacts import sidecar as sc
from bonedeploy.data.preprocess import PreprocessSpec

FACTS = {"tensorrt": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
         "cuda_runtime": "12.6", "cuda_driver_api": "12.8", "driver": "560.35.03"}
CARD = ModelCard(model="alexnet_d08_wd1e-3", precision="fp16", source_sha256="ef" * 32,
                 preprocess=PreprocessSpec(crop_size=400))
PROFILE = {"input": "image", "min": 1, "opt": 8, "max": 32,
           "shapes": [[1, 1, 400, 400], [8, 1, 400, 400], [32, 1, 400, 400]]}


def sidecar(**facts):
    return sc.build_sidecar({**FACTS, **facts}, CARD, PROFILE, "/x/model.fp16.onnx", "12" * 32,
                            "2026-01-01T00:00:00+00:00", 12.5, 2 << 30)


def test_sidecar_path_is_beside_the_engine(tmp_path):
    assert sc.sidecar_path(tmp_path / "model.trt") == tmp_path / "model.trt.json"
    assert sc.sidecar_path("a/b.engine").name == "b.engine.json"


def test_round_trip_keeps_every_fact(tmp_path):
    engine = tmp_path / "model.trt"
    path = sc.write_sidecar(engine, sidecar())
    assert path == tmp_path / "model.trt.json" and not list(tmp_path.glob(".*.tmp"))
    data = sc.read_sidecar(engine)
    assert data == sidecar()
    assert {k: data[k] for k in FACTS} == FACTS
    assert data["precision"] == "fp16" and data["profile"] == PROFILE
    assert data["onnx"] == {"file": "model.fp16.onnx", "sha256": "12" * 32}
    assert data["classes"] == ["Fractured", "Normal"] and data["preprocess"]["crop_size"] == 400
    assert data["built_at"].startswith("2026") and data["workspace_bytes"] == 2 << 30
    assert sc.card_from_sidecar(data) == CARD


def test_missing_or_foreign_sidecar_says_how_to_rebuild(tmp_path):
    engine = tmp_path / "model.trt"
    with pytest.raises(ArtefactError, match=r"model\.trt\.json: missing.*rebuild with `bonedeploy export .*model\.onnx`"):
        sc.read_sidecar(engine)
    sc.sidecar_path(engine).write_text("{not json")
    with pytest.raises(ArtefactError, match="unreadable sidecar"):
        sc.read_sidecar(engine)
    sc.sidecar_path(engine).write_text('{"format": "something/else"}')
    with pytest.raises(ArtefactError, match="not a bonedeploy engine sidecar"):
        sc.read_sidecar(engine)


def test_same_setup_is_compatible():
    assert sc.check_compatible(sidecar(), dict(FACTS)) == []


@pytest.mark.parametrize("key, here, says", [
    ("tensorrt", "11.0.0", "TensorRT 10.3.0 at build, 11.0.0 here"),
    ("gpu_name", "Orin", "GPU NVIDIA H100 80GB HBM3 at build, Orin here"),
    ("compute_capability", "8.7", "compute capability 9.0 at build, 8.7 here"),
])
def test_version_or_gpu_mismatch_names_it_and_the_rebuild_command(key, here, says, tmp_path):
    with pytest.raises(IncompatibleEngineError) as info:
        sc.check_compatible(sidecar(), {**FACTS, key: here}, engine=tmp_path / "model.trt")
    msg = str(info.value)
    assert says in msg and "\n" not in msg
    assert f"rebuild with `bonedeploy export {tmp_path / 'model.fp16.onnx'}`" in msg


def test_every_fatal_difference_is_listed_at_once():
    with pytest.raises(IncompatibleEngineError) as info:
        sc.check_compatible(sidecar(), {**FACTS, "tensorrt": "11.0.0", "compute_capability": "8.7"})
    assert "TensorRT 10.3.0" in str(info.value) and "compute capability 9.0" in str(info.value)
    assert "rebuild with `bonedeploy export model.fp16.onnx`" in str(info.value)


def test_cuda_or_driver_differences_are_notes_not_errors():
    notes = sc.check_compatible(sidecar(), {**FACTS, "driver": "570.1", "cuda_runtime": "12.8"})
    assert notes == ["CUDA runtime 12.6 at build, 12.8 here", "driver 560.35.03 at build, 570.1 here"]
