"""The training report names the saved epoch against the run's configured epochs."""

import numpy as np

from bonedeploy.training.report import build_report, render_markdown


class _Param:
    def __init__(self, n):
        self.n = n

    def numel(self):
        return self.n


def test_saved_epoch_is_of_the_configured_epochs_not_of_best_pts_history():
    """An 8-epoch run whose best epoch was 4: best.pt's history holds epochs 1-4 only."""
    history = [{"epoch": e, "val_acc": 0.5 + e / 20, "val_loss": 1.0} for e in range(1, 5)]
    ckpt = {"card": {"classes": ["Fractured", "Normal"]}, "epoch": 4, "history": history,
            "state_dict": {"w": _Param(10)},
            "config": {"model": "alexnet_d08_wd1e-3", "epochs": 8, "dropout": 0.8, "weight_decay": 1e-3,
                       "lr": 1e-4, "batch_size": 16}}
    y = np.array([0, 0, 1, 1])
    logits = np.array([[2.0, -2.0], [1.0, 0.0], [-1.0, 1.0], [0.5, 0.0]])
    report = build_report(ckpt, {"train": logits, "val": logits}, {"train": y, "val": y})
    assert report["saved_epoch"] == 4 and report["epochs"] == 8 and report["completed_epochs"] == 8
    md = render_markdown(report)
    assert "Saved epoch **4** of 8 " in md and "of 4 " not in md
