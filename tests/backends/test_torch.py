"""torch backend: checkpoint loading, option combinations, parity with onnxruntime, CUDA paths."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bonedeploy.artefacts.card import ModelCard  # noqa: E402
from bonedeploy.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from bonedeploy.backends.torch import TorchBackend  # noqa: E402
from bonedeploy.artefacts.checkpoint import save_checkpoint  # noqa: E402
from bonedeploy.errors import BackendUnavailableError, CheckpointError, ConfigError  # noqa: E402
from bonedeploy.models import create_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*(legacy TorchScript|feature will be removed).*:DeprecationWarning")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")


@pytest.fixture(scope="module")
def vgg8(tmp_path_factory):
    """A random-init vgg8 as checkpoint and as ONNX (torch.onnx.export + bonedeploy metadata)."""
    import onnx

    torch.manual_seed(0)
    model = create_model("vgg8").eval()
    card = ModelCard(model="vgg8")
    folder = tmp_path_factory.mktemp("vgg8")
    ckpt = save_checkpoint(folder / "best.pt", {"card": card.to_dict(), "model_kwargs": {},
                                                 "state_dict": model.state_dict()})
    onnx_path = folder / "model.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 400, 400), onnx_path, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    proto = onnx.load(onnx_path)
    onnx.helper.set_model_props(proto, card.to_props())
    onnx.save(proto, onnx_path)
    return model, ckpt, onnx_path


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 400, 400), dtype=np.float32)


def test_checkpoint_runs_and_matches_the_module(vgg8):
    model, ckpt, _ = vgg8
    x = images(3)
    with TorchBackend(ckpt, device="cpu") as b:
        assert b.card.model == "vgg8" and b.card.preprocess.input_shape == (1, 400, 400)
        out = b.infer(x)
        assert b.describe()["device"] == "cpu" and b.describe()["precision"] == "fp32"
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_fp32_parity_with_onnxruntime_on_the_same_model(vgg8):
    _, ckpt, onnx_path = vgg8
    x = images(4, seed=1)
    with TorchBackend(ckpt) as t, OnnxRuntimeBackend(onnx_path) as o:
        assert t.card == o.card
        delta = np.abs(t.infer(x) - o.infer(x)).max()
    assert delta < 1e-3, delta


@pytest.mark.skipif(CUDA, reason="checks the CPU refusals")
@pytest.mark.parametrize("opts, match", [
    ({"precision": "fp16"}, "fp16 needs a CUDA device.*valid combinations: device=cpu with precision=fp32"),
    ({"device": "cpu", "cuda_graph": True, "batch_size": 4}, "cuda_graph needs a CUDA device"),
])
def test_cpu_refuses_fp16_and_cuda_graphs_listing_valid_combinations(vgg8, opts, match):
    with pytest.raises(ConfigError, match=match):
        TorchBackend(vgg8[1], **opts).load()


@pytest.mark.skipif(CUDA, reason="checks the no-GPU error")
@pytest.mark.parametrize("before", [False, True])
def test_close_restores_the_global_cudnn_benchmark_flag(vgg8, before, monkeypatch):
    """cuda_graph sets the process-wide torch.backends.cudnn.benchmark while loaded. Capture needs
    a GPU, so the flip is done by hand here (as _capture_graph does); close() must undo it."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", before)
    backend = TorchBackend(vgg8[1], device="cpu").load()
    torch.backends.cudnn.benchmark = not before
    backend.close()
    assert torch.backends.cudnn.benchmark is before


def test_a_failed_load_restores_the_cudnn_benchmark_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    backend = TorchBackend(tmp_path / "bad.pt", device="cpu")
    monkeypatch.setattr(backend, "_load_model", lambda *a: (setattr(torch.backends.cudnn, "benchmark", True),
                                                             1 / 0))
    with pytest.raises(ZeroDivisionError):
        backend.load()
    assert torch.backends.cudnn.benchmark is False


def test_cuda_without_a_gpu_is_unavailable(vgg8):
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        TorchBackend(vgg8[1], device="cuda").load()


@pytest.mark.parametrize("opts, match", [
    ({"device": "tpu"}, "valid: auto, cpu, cuda"),
    ({"precision": "int8"}, "valid: fp32, fp16"),
    ({"cuda_graph": True}, "fixed positive batch_size"),
])
def test_bad_options_list_the_valid_ones(opts, match):
    with pytest.raises(ConfigError, match=match):
        TorchBackend("best.pt", **opts)


def test_not_a_checkpoint_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="bad.pt"):
        TorchBackend(bad).load()


@needs_cuda
def test_fp16_on_cuda_is_close_to_fp32(vgg8):
    x = images(4)
    with TorchBackend(vgg8[1], device="cuda") as f32, TorchBackend(vgg8[1], device="cuda", precision="fp16") as f16:
        a, b = f32.infer(x), f16.infer(x)
    assert b.dtype == np.float32 and np.abs(a - b).max() < 5e-2


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_replay_equals_eager_including_a_partial_last_batch(vgg8, precision):
    x = images(10)  # 4 + 4 + 2 (padded)
    with TorchBackend(vgg8[1], device="cuda", precision=precision) as eager, \
            TorchBackend(vgg8[1], device="cuda", precision=precision, cuda_graph=True, batch_size=4) as graph:
        a, b = eager.infer(x), graph.infer(x)
        assert graph.describe()["cuda_graph"] and graph.infer(x[:1]).shape == (1, 2)
    np.testing.assert_allclose(b, a, atol=1e-2 if precision == "fp16" else 1e-4)
