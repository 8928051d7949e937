"""The OOD head every artefact computes: the published formulas, the blank check, the wrapper."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bonedeploy.errors import ConfigError  # noqa: E402
from bonedeploy.models.ood import OODHead, ScoredModel, pixel_spread, run_with_features, scored_model  # noqa: E402
from bonedeploy.models.ood_spec import BLANK_SCORE  # noqa: E402


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def test_mahalanobis_is_the_min_over_classes_of_the_tied_covariance_distance():
    rng = np.random.default_rng(0)
    f = rng.random((5, 3))
    mu = rng.random((2, 3))
    a = rng.random((3, 3))
    precision = a @ a.T + np.eye(3)
    proj = np.linalg.cholesky(precision)
    head = OODHead("mahalanobis", {"proj": proj, "means": (mu @ proj)[None]})
    got = head.score(_t(np.ones(5)), _t(np.zeros((5, 2))), _t(f)).numpy()
    want = np.min([np.einsum("nd,de,ne->n", f - m, precision, f - m) for m in mu], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_power_normalisation_is_the_signed_square_root_first():
    f = np.array([[4.0, -9.0]])
    head = OODHead("mahalanobis", {"proj": np.eye(2), "means": np.zeros((1, 1, 2))}, power=True)
    assert head.score(_t([1.0]), _t([[0, 0]]), _t(f)).item() == pytest.approx(2 ** 2 + 3 ** 2)


def test_energy_and_knn_follow_their_papers():
    logits = np.array([[2.0, 1.0], [-3.0, 0.5]])
    energy = OODHead("energy").score(_t([1, 1]), _t(logits), None).numpy()
    np.testing.assert_allclose(energy, -np.log(np.exp(logits).sum(axis=1)), rtol=1e-6)
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    knn = OODHead("knn", {"bank": bank.T}, k=2).score(_t([1]), _t([[0, 0]]), _t([[3.0, 0.0]])).item()
    assert knn == pytest.approx(1 - 0.6)  # the 2nd largest cosine similarity is 0.6


def test_a_blank_image_scores_the_blank_score_whatever_its_features():
    head = OODHead("energy")
    x = torch.zeros(2, 1, 8, 8)
    x[1] = torch.rand(1, 8, 8)
    out = head.score(pixel_spread(x), torch.zeros(2, 2), None)
    assert out[0].item() == BLANK_SCORE and out[1].item() < 0


def test_the_wrapper_returns_logits_and_the_score_of_the_hooked_layer():
    from torch import nn

    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    head = OODHead("mahalanobis", {"proj": np.eye(3), "means": np.zeros((1, 1, 3))})
    x = torch.rand(4, 1, 10, 10)
    logits, score = ScoredModel(net, "1", head)(x)
    feats = net[1](net[0](x)).mean(dim=(2, 3))
    assert torch.allclose(logits, net(x)) and torch.allclose(score, (feats ** 2).sum(1), rtol=1e-5)
    lg, f, spread = run_with_features(net, "1", x.numpy())
    np.testing.assert_allclose(f, feats.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(spread, x.flatten(1).std(1, correction=0).numpy(), rtol=1e-5)


def test_a_card_without_a_gate_leaves_the_model_alone():
    from torch import nn

    from onnxkit import tiny_card

    net = nn.Linear(2, 2)
    assert scored_model(net, tiny_card(), {}) is net


def test_each_family_names_its_last_convolutional_block():
    from bonedeploy.models import create_model, last_conv_layer, register_last_conv

    assert last_conv_layer("resnet", create_model("resnet16")) == "layers"
    assert last_conv_layer("vgg", create_model("vgg8")) == "18"  # the ReLU before the last pool
    with pytest.raises(ConfigError, match="families: .*alexnet"):
        last_conv_layer("nosuch", None)
    with pytest.raises(ValueError, match="already"):
        register_last_conv("resnet", lambda m: "x")
