"""What the out-of-distribution head computes, without torch: its methods, the output's name, the
blank-image score and the input check's default. The head (``bonedeploy.models.ood``) and the
card's gate (``bonedeploy.artefacts.ood``, which the torch-free runtime reads) share these.
"""

OOD_OUTPUT = "ood_score"  # the graph's second output: float32, one score per image
METHODS = ("energy", "mahalanobis", "knn")
# The score the input check gives a blank image (one value, no contrast) whatever the features
# say: far above any threshold, finite so that CSV and JSON files carry it as a number, and exact
# in float32 (2^100, about 1.27e30).
BLANK_SCORE = 2.0 ** 100
DEFAULT_MIN_STD = 1e-3  # pixel spread (images in [0, 1]) below one 8-bit grey level: no content
