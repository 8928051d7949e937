"""The DICOM node refuses what the OOD gate refuses: the finding is "not analysed" with the gate's
reason (the report says "not analysed: rejected: out of distribution (...)"), through infer's own
functions."""

import numpy as np
from PIL import Image

from bonedeploy.backends import open_backend
from bonedeploy.data.decode import decode_batch
from bonedeploy.dicomnode.analyse import Analyser
from bonedeploy.eval.decision import rule_for
from onnxkit import tiny_ood_card, tiny_onnx_classifier


def test_a_non_radiograph_becomes_not_analysed_with_the_gates_reason(tmp_path):
    paths = []
    for name, level in (("elbow", 150), ("white", 253)):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(np.full((40, 40), level, np.uint8)).save(paths[-1])
    with open_backend(tiny_onnx_classifier(tmp_path / "m.onnx", tiny_ood_card(threshold=20.0))) as backend:
        analyser = Analyser(None, None, backend, rule_for(backend.card), None, None, [], 2, 0.1)
        try:
            findings = analyser.infer(["u1", "u2"], paths, decode_batch(paths, backend.card.preprocess))
        finally:
            analyser.decoder.shutdown()
    assert findings["u1"].present is not None and findings["u1"].ood_score < 20
    refused = findings["u2"]
    assert refused.present is None and refused.ood_score > 20
    assert refused.not_analysed.startswith("rejected: out of distribution (score ")
