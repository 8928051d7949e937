"""Every backend hands out the graph's ``ood_score`` (or says it has none): onnxruntime, OpenVINO,
and the TensorRT glue (stand-ins for TensorRT and CUDA, as in test_tensorrt_backend: our glue,
not TensorRT)."""


import numpy as np
import pytest

from backends.test_tensorrt_backend import FACTS, FakeContext, FakeEngine, install_fakes
from bonedeploy.artefacts import sidecar as sc
from bonedeploy.backends import open_backend
from onnxkit import tiny_card, tiny_logits, tiny_ood_card, tiny_ood_scores, tiny_onnx_classifier


def _x(n=5):
    return np.random.default_rng(n).random((n, 1, 32, 32), dtype=np.float32)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_file_backends_return_the_graphs_score(backend, tmp_path):
    if backend == "openvino":
        pytest.importorskip("openvino")
    x = _x()
    options = {"cache": False} if backend == "openvino" else {}
    with open_backend(tiny_onnx_classifier(tmp_path / "g.onnx", tiny_ood_card()), backend, **options) as b:
        logits, score = b.infer_scored(x)
        assert b.gives_ood_score
    np.testing.assert_allclose(logits, tiny_logits(x), atol=1e-5)
    np.testing.assert_allclose(score, tiny_ood_scores(x), atol=1e-4)  # float32 means, 100 x
    with open_backend(tiny_onnx_classifier(tmp_path / "old.onnx", tiny_card()), backend, **options) as b:
        assert not b.gives_ood_score and b.infer_scored(x)[1] is None


class ScoredEngine(FakeEngine):
    num_io_tensors = 3

    def get_tensor_name(self, i):
        return ["input", "logits", "ood_score"][i]

    def get_tensor_shape(self, name):
        return {"input": (-1, 1, 32, 32), "logits": (-1, 2), "ood_score": (-1,)}[name]

    def create_execution_context(self):
        self.context = ScoredContext(self)
        return self.context


class ScoredContext(FakeContext):
    def execute_async_v3(self, stream_handle):
        super().execute_async_v3(stream_handle)
        mem, n = self.engine.cudart.device, self.shape[0]
        x = np.frombuffer(bytes(mem[self.addresses["input"]][: n * 4 * 32 * 32]), np.float32)
        s = tiny_ood_scores(x.reshape(n, 1, 32, 32))
        mem[self.addresses["ood_score"]][: s.nbytes] = s.tobytes()
        return True


def test_tensorrt_copies_the_engines_score_back_with_the_logits(tmp_path, monkeypatch):
    cudart = install_fakes(monkeypatch, ScoredEngine).cudart
    engine = tmp_path / "model.trt"
    engine.write_bytes(b"serialized engine")
    sc.write_sidecar(engine, sc.build_sidecar(FACTS, tiny_ood_card(), {"min": 2, "opt": 4, "max": 4},
                                              "model.onnx", "0" * 64, "2025-01-01T00:00:00+00:00"))
    x = _x(9)  # 4 + 4 + 1 padded to 2
    with open_backend(engine) as b:
        logits, score = b.infer_scored(x)
        assert b.gives_ood_score and b.card.ood == tiny_ood_card().ood
    np.testing.assert_allclose(logits, tiny_logits(x), atol=1e-6)
    np.testing.assert_allclose(score, tiny_ood_scores(x), rtol=1e-6)
    assert not cudart.device and not cudart.host  # every buffer freed, the score's too
