"""Parity with the reference: metrics on hand-made logits, the gates, and where inputs come from."""

from pathlib import Path

import numpy as np
import pytest

from exportkit import make_tree  # noqa: E402

from bonedeploy.eval import parity  # noqa: E402
from bonedeploy.errors import ConfigError, DataError  # noqa: E402
from bonedeploy.data.preprocess import PreprocessSpec  # noqa: E402

CLASSES = ("Fractured", "Normal")
SPEC = PreprocessSpec(crop_size=32)


def logits_for(p_fractured):
    """Two-class logits whose softmax gives exactly these p(Fractured)."""
    p = np.asarray(p_fractured, dtype=np.float64)
    return np.stack([np.log(p), np.log1p(-p)], axis=1)


def names(n):
    return [f"img{i}.png" for i in range(n)]


def test_identical_outputs_are_perfect():
    ref = logits_for([0.9, 0.2, 0.6])
    r = parity.compare(ref, ref.copy(), names(3), CLASSES, labels=[0, 1, 0])
    assert (r.max_abs_dprob, r.mean_abs_dprob, r.top1_agreement, r.flips) == (0.0, 0.0, 1.0, [])
    assert r.accuracy_ref == r.accuracy_cand == 1.0 and r.accuracy_delta == 0.0
    assert r.sensitivity_cand == 1.0 and r.specificity_cand == 1.0
    assert parity.check_gate(r, "fp32") == []


def test_metrics_flips_and_accuracy_delta():
    ref = logits_for([0.9, 0.52, 0.2, 0.8])
    cand = logits_for([0.88, 0.47, 0.2, 0.3])  # two flips: one near the boundary, one far
    r = parity.compare(ref, cand, names(4), CLASSES, labels=[0, 0, 1, 0])
    assert r.max_abs_dprob == pytest.approx(0.5) and r.mean_abs_dprob == pytest.approx((0.02 + 0.05 + 0.5) / 4)
    assert r.top1_agreement == 0.5
    assert [(f.path, f.ref_class, f.cand_class) for f in r.flips] == [
        ("img1.png", "Fractured", "Normal"), ("img3.png", "Fractured", "Normal")]
    near, far = r.flips
    assert near.near_boundary() and near.margin == pytest.approx(0.02)
    assert not far.near_boundary() and far.ref_prob == pytest.approx(0.8) and far.cand_prob == pytest.approx(0.3)
    assert [f.path for f in r.flips_away()] == ["img3.png"]
    assert r.accuracy_ref == 1.0 and r.accuracy_cand == 0.5 and r.accuracy_delta == -0.5
    assert r.sensitivity_ref == 1.0 and r.sensitivity_cand == pytest.approx(1 / 3)
    assert r.specificity_delta == 0.0


def test_to_dict_has_what_bench_and_reports_read():
    r = parity.compare(logits_for([0.9, 0.52]), logits_for([0.9, 0.49]), names(2), CLASSES, labels=[0, 1])
    d = r.to_dict()
    for key in ("max_abs_dprob", "mean_abs_dprob", "top1_agreement", "accuracy_ref", "accuracy_cand",
                "accuracy_delta", "sensitivity_cand", "specificity_cand", "flips", "flips_away", "n"):
        assert key in d
    assert d["flips"][0]["path"] == "img1.png" and d["flips"][0]["near_boundary"] is True
    assert d["classes"] == list(CLASSES) and d["flips_away"] == 0


def test_unlabelled_sets_report_no_accuracy_and_the_gate_ignores_it():
    r = parity.compare(logits_for([0.9]), logits_for([0.9]), names(1), CLASSES)
    assert r.labelled is False and r.accuracy_delta is None
    assert parity.check_gate(r, "int8") == []


def test_fp32_gate():
    ref = logits_for([0.7, 0.3])
    ok = parity.compare(ref, logits_for([0.70005, 0.3]), names(2), CLASSES)
    bad = parity.compare(ref, logits_for([0.7002, 0.3]), names(2), CLASSES)
    assert parity.check_gate(ok, "fp32") == []
    assert parity.check_gate(bad, "fp32") == ["max |Δprob| 2.00e-04 > 0.0001"]


def test_fp16_gate_tolerates_boundary_flips_but_not_confident_ones():
    ref = logits_for([0.503, 0.9, 0.1])
    near = parity.compare(ref, logits_for([0.497, 0.9, 0.1]), names(3), CLASSES)
    assert len(near.flips) == 1 and parity.check_gate(near, "fp16") == []
    far = parity.compare(logits_for([0.56, 0.9]), logits_for([0.495, 0.9]), names(2), CLASSES)
    failures = parity.check_gate(far, "fp16")
    assert any("1 label flip(s) away from the boundary (margin > 0.05): img0.png" in f for f in failures)
    loose = {**parity.GATES, "fp16": parity.GATES["fp16"].with_(max_abs_dprob=0.1, flip_margin=0.1)}
    assert parity.check_gate(far, "fp16", loose) == []


def test_int8_gate_agreement_and_accuracy_drop():
    p = np.full(100, 0.9)
    cand = p.copy()
    cand[:3] = 0.2  # 3 of 100 flip Fractured -> Normal: 97% agreement, 3 points lost
    r = parity.compare(logits_for(p), logits_for(cand), names(100), CLASSES, labels=np.zeros(100, int))
    assert parity.check_gate(r, "int8") == ["top-1 agreement 97.0% < 98%", "accuracy drop 3.0 pt > 1 pt",
                                            "sensitivity at argmax of the calibrated probabilities "
                                            "drops 3.0 pt > 2 pt"]
    cand[2] = 0.9
    r = parity.compare(logits_for(p), logits_for(cand), names(100), CLASSES, labels=np.zeros(100, int))
    assert parity.check_gate(r, "int8") == ["accuracy drop 2.0 pt > 1 pt"]


def test_int8_accuracy_drop_is_never_less_than_one_image():
    """80 images: 1 pt is less than one image; one Normal called Fractured passes (agreement
    98.75%), two do not."""
    p = np.full(80, 0.1)
    labels = np.ones(80, int)  # all Normal
    cand = p.copy()
    cand[0] = 0.9
    r = parity.compare(logits_for(p), logits_for(cand), names(80), CLASSES, labels=labels)
    assert r.accuracy_delta == pytest.approx(-1 / 80) and parity.check_gate(r, "int8") == []
    cand[1] = 0.9
    r = parity.compare(logits_for(p), logits_for(cand), names(80), CLASSES, labels=labels)
    assert "accuracy drop 2.5 pt > 1 pt (and more than one image)" in parity.check_gate(r, "int8")


def test_non_finite_candidate_outputs_fail_every_gate():
    cand = logits_for([0.9, 0.2])
    cand[1] = np.nan
    r = parity.compare(logits_for([0.9, 0.2]), cand, names(2), CLASSES)
    assert r.nonfinite == 1 and r.flips[0].cand_class == "NaN"
    for prec in ("fp32", "fp16", "int8"):
        assert "1 image(s) gave NaN/inf logits" in parity.check_gate(r, prec)


def test_threshold_moves_the_boundary():
    r = parity.compare(logits_for([0.35]), logits_for([0.25]), names(1), CLASSES, threshold=0.3)
    assert len(r.flips) == 1 and r.flips[0].margin == pytest.approx(0.05)


def test_gate_configuration_errors_list_valid_choices():
    with pytest.raises(ConfigError, match="valid: .*max_abs_dprob"):
        parity.GATES["fp16"].with_(max_dprob=1)
    with pytest.raises(ConfigError, match=r"min_top1_agreement = 98: must be within \[0, 1\]"):
        parity.GATES["int8"].with_(min_top1_agreement=98)
    r = parity.compare(logits_for([0.5]), logits_for([0.5]), names(1), CLASSES)
    with pytest.raises(ConfigError, match="valid: fp32, fp16, int8"):
        parity.check_gate(r, "bf16")
    with pytest.raises(ValueError, match="do not line up"):
        parity.compare(logits_for([0.5]), logits_for([0.5, 0.4]), names(1), CLASSES)


def test_inputs_from_a_data_folder(tmp_path):
    root = make_tree(tmp_path / "data", per_class=3)
    ps = parity.select_parity_set(data=root, spec=SPEC, classes=CLASSES)
    assert ps.x.shape == (6, 1, 32, 32) and ps.x.dtype == np.float32
    assert ps.labels.tolist() == [0, 0, 0, 1, 1, 1] and Path(ps.paths[0]).is_file()
    assert (ps.kind, ps.root) == ("data folder", str(root))
    assert ps.describe() == {"kind": "data folder", "n": 6, "root": str(root), "labelled": True}
    two = parity.select_parity_set(data=root, spec=SPEC, n=2)
    assert len(two) == 2 and {Path(p).parent.name for p in two.paths} == set(CLASSES)
    with pytest.raises(DataError, match="do not match the model's"):
        parity.select_parity_set(data=root, spec=SPEC, classes=("Normal", "Fractured"))


def _ckpt_with_split(root):
    from bonedeploy.data.folders import scan_image_folder
    from bonedeploy.data.split import make_split

    return {"card": {"classes": list(CLASSES)}, "split": make_split(scan_image_folder(root), 0.4, 0).to_dict()}


def test_inputs_from_the_checkpoint_validation_split(tmp_path):
    root = make_tree(tmp_path / "data", per_class=5)
    ckpt = _ckpt_with_split(root)
    ps = parity.select_parity_set(ckpt=ckpt, spec=SPEC)
    val = sorted(str(root / e["path"]) for e in ckpt["split"]["val"])
    assert sorted(ps.paths) == val and len(ps) == len(val) == 4 and set(ps.labels) == {0, 1}
    assert (ps.kind, ps.root) == ("checkpoint validation split", str(root))
    ckpt["split"]["root"] = str(tmp_path / "moved")  # folder gone: synthetic fallback
    gone = parity.select_parity_set(ckpt=ckpt, spec=SPEC, n=4)
    assert (gone.kind, gone.root) == ("synthetic", None)


def test_an_explicit_data_folder_wins_over_the_checkpoint_split(tmp_path):
    split_root = make_tree(tmp_path / "split", per_class=5)
    other = make_tree(tmp_path / "other", per_class=2)
    ps = parity.select_parity_set(ckpt=_ckpt_with_split(split_root), data=other, spec=SPEC)
    assert (ps.kind, ps.root, len(ps)) == ("data folder", str(other), 4)
    assert all(Path(p).is_relative_to(other) for p in ps.paths)


def test_synthetic_fallback_generates_labelled_radiographs():
    ps = parity.select_parity_set(spec=SPEC, n=4)
    assert ps.x.shape == (4, 1, 32, 32) and set(ps.labels) == {0, 1}
    assert (ps.kind, ps.root) == ("synthetic", None)
    assert all(p.startswith("synthetic/") for p in ps.paths) and not Path(ps.paths[0]).exists()
    assert 0.0 <= ps.x.min() and ps.x.max() <= 1.0 and ps.x.std() > 0.01


def test_a_parity_set_checks_its_kind_and_lengths():
    x = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="valid: data folder, checkpoint validation split, synthetic"):
        parity.ParitySet(x, None, ["a", "b"], "test")
    with pytest.raises(ValueError, match="do not line up"):
        parity.ParitySet(x, [0, 1, 1], ["a", "b"], "synthetic")


class _Recorder:
    """Stand-in backend: records each batch size, logits from the image means."""

    def __init__(self):
        self.sizes = []

    def infer(self, batch):
        self.sizes.append(len(batch))
        m = batch.reshape(len(batch), -1).mean(axis=1)
        return np.stack([m, -m], axis=1).astype(np.float64)


def test_backend_logits_runs_the_set_in_batches_in_order():
    x = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    ps = parity.ParitySet(x, None, names(5), "synthetic")
    b = _Recorder()
    out = parity.backend_logits(b, ps, batch=2)
    assert b.sizes == [2, 2, 1] and out.dtype == np.float32
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_an_unlabelled_folder_beside_the_classes_is_not_a_class(tmp_path):
    """`bonedeploy synth --test-n` leaves test/ beside Fractured/ and Normal/."""
    root = make_tree(tmp_path / "data", per_class=2)
    make_tree(tmp_path / "other", per_class=1)
    (tmp_path / "other" / "Fractured").rename(root / "test")
    ps = parity.select_parity_set(data=root, spec=SPEC, classes=CLASSES)
    assert len(ps) == 4 and ps.labels.tolist() == [0, 0, 1, 1]
    assert not any("/test/" in p for p in ps.paths)
