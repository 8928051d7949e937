"""A training run's report: report.json / report.md (scikit-learn metrics with a Wilson 95%
interval, sensitivity/specificity for the positive class, ROC AUC) and curves.png.

Torch-free: it works on the logits the trainer computed for best.pt (in fp32) and on the
checkpoint's plain-typed fields; the metrics themselves come from ``bonedeploy.eval.metrics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bonedeploy import POSITIVE_CLASS
from bonedeploy.ui.markdown import pipe_table
from bonedeploy.util.fs import atomic_path, write_json, write_text
from bonedeploy.eval.metrics import classification_summary, format_accuracy, softmax

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def count_params(state_dict: dict[str, Any]) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, not parameters)."""
    return int(sum(v.numel() for k, v in state_dict.items() if not k.endswith(_BUFFERS)))


def positive_class(classes: Sequence[str]) -> str:
    return POSITIVE_CLASS if POSITIVE_CLASS in classes else classes[0]


def hyperparameters(config: dict[str, Any]) -> str:
    """The seed table's 'Hyper parameters' cell for what was actually run."""
    from bonedeploy.models import get_model_entry

    parts = [get_model_entry(config["model"]).description]
    if config.get("dropout") is not None:
        parts.append(f"dropout {config['dropout']:g}")
    parts += [f"λ={config['weight_decay']:g}", f"lr={config['lr']:g}", f"batch {config['batch_size']}"]
    return ", ".join(parts)


def build_report(ckpt: dict[str, Any], logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 paths: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    from sklearn.metrics import log_loss

    from bonedeploy.models import get_model_entry

    classes = list(ckpt["card"]["classes"])
    pos = positive_class(classes)
    cfg = ckpt["config"]
    parts: dict[str, Any] = {}
    for part in ("train", "val"):
        probs = softmax(logits[part])
        s = classification_summary(labels[part], probs, classes, positive=pos)
        s["loss"] = float(log_loss(labels[part], probs, labels=list(range(len(classes)))))
        parts[part] = s
    seed = get_model_entry(cfg["model"]).seed
    report = {
        "model": cfg["model"],
        "hyperparameters": hyperparameters(cfg),
        "epochs": cfg["epochs"],
        # written once the last epoch is done; best.pt's own history stops at the saved epoch
        "completed_epochs": cfg["epochs"],
        "saved_epoch": ckpt["epoch"],
        "params": count_params(ckpt["state_dict"]),
        "classes": classes,
        "positive_class": pos,
        "train": parts["train"],
        "val": parts["val"],
        "seed": {"val_acc": seed.val_acc, "train_acc": seed.train_acc, "f1": seed.f1,
                 "saved_epoch": seed.saved_epoch, "train_loss": seed.train_loss,
                 "val_loss": seed.val_loss},
        "errors": _errors(parts["val"], logits["val"], labels["val"], (paths or {}).get("val"), classes),
        "skipped_bad": list(ckpt.get("skipped_bad") or []),
        "split": {k: v for k, v in (ckpt.get("split") or {}).items() if k not in ("train", "val")}
        | {"n_train": len((ckpt.get("split") or {}).get("train", [])),
           "n_val": len((ckpt.get("split") or {}).get("val", []))},
        "config": cfg,
        "runtime": ckpt.get("runtime"),
        "versions": ckpt.get("versions"),
    }
    return report


def write_report(out: str | Path, ckpt: dict[str, Any], logits: dict[str, np.ndarray],
                 labels: dict[str, np.ndarray], paths: dict[str, Sequence[str]] | None = None,
                 decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write report.json, report.md and curves.png into ``out``; returns the report dict.
    ``decision``: the temperature and operating point fitted for best.pt (and why not)."""
    out = Path(out)
    report = build_report(ckpt, logits, labels, paths)
    if decision is not None:
        report["decision"] = decision
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    plot_curves(ckpt.get("history") or [], report["saved_epoch"], out / "curves.png",
                title=f"{report['model']} ({report['hyperparameters']})")
    return report


def _errors(summary: dict, logits: np.ndarray, y: np.ndarray, paths: Sequence[str] | None,
            classes: list[str]) -> list[dict[str, Any]]:
    """Misclassified validation images, most confident first: what a reviewer looks at."""
    probs = softmax(logits)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != np.asarray(y))
    rows = [{"path": str(paths[i]) if paths is not None else int(i), "true": classes[int(y[i])],
             "pred": classes[int(pred[i])], "p_pred": float(probs[i, pred[i]])} for i in wrong]
    return sorted(rows, key=lambda r: -r["p_pred"])


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def render_markdown(r: dict[str, Any]) -> str:
    v, t, seed = r["val"], r["train"], r["seed"]
    classes = r["classes"]
    cm = v["confusion_matrix"]
    lines = [
        f"# {r['model']}: training report",
        "",
        f"{r['hyperparameters']}. Saved epoch **{r['saved_epoch']}** of {r['epochs']} "
        f"(best validation accuracy; ties go to the lower validation loss). "
        f"{r['params']:,} parameters.",
        "",
        pipe_table(["", "train", "val"], [
            ["accuracy (95% Wilson CI)", format_accuracy(t), format_accuracy(v)],
            ["loss (mean cross-entropy)", f"{t['loss']:.4f}", f"{v['loss']:.4f}"],
            ["F1 (macro)", _pct(t.get("f1")), _pct(v.get("f1"))],
            [f"sensitivity ({r['positive_class']})", _pct(t.get("sensitivity")), _pct(v.get("sensitivity"))],
            ["specificity", _pct(t.get("specificity")), _pct(v.get("specificity"))],
            ["ROC AUC", _pct(t.get("roc_auc")), _pct(v.get("roc_auc"))]]),
        "",
        f"The seed reported for this variant: train {seed['train_acc']:.2f}, val {seed['val_acc']:.2f}, "
        f"F1 {seed['f1']:.2f}, saved epoch {seed['saved_epoch']} (validation n=72, where one image "
        f"is 1.4 points).",
        "",
        "## Validation confusion matrix (rows: true, columns: predicted)",
        "",
        pipe_table(["", *classes], [[f"**{c}**", *row] for c, row in zip(classes, cm)]),
        "",
        "## Validation classification report (scikit-learn)",
        "",
        pipe_table(["", "precision", "recall", "f1-score", "support"],
                   [_report_row(k, v["report"][k]) for k in [*classes, "macro avg", "weighted avg"]
                    if k in v["report"]]),
        "",
    ]
    if r["errors"]:
        lines += ["## Misclassified validation images", "", pipe_table(
            ["image", "true", "predicted", "p"],
            [[e["path"], e["true"], e["pred"], f"{e['p_pred']:.3f}"] for e in r["errors"]]), ""]
    if r["skipped_bad"]:
        lines += [f"## Unreadable images left out (--skip-bad): {len(r['skipped_bad'])}", ""]
        lines += [f"- {b['path']}: {b['cause']}" for b in r["skipped_bad"]]
        lines.append("")
    lines += _decision_lines(r.get("decision"))
    rt = r.get("runtime") or {}
    ver = r.get("versions") or {}
    lines += [
        "## Run",
        "",
        f"- split: {r['split'].get('n_train')} train / {r['split'].get('n_val')} val images",
        f"- device: {rt.get('device_name', '?')} ({rt.get('precision', '?')}), "
        f"torch {ver.get('torch')}, bonedeploy {ver.get('bonedeploy')}, git {ver.get('git_commit')}",
        "- files: best.pt (saved epoch), last.pt (resume state), metrics.json (history), curves.png",
        "",
    ]
    return "\n".join(lines)


def _decision_lines(d: dict[str, Any] | None) -> list[str]:
    """How best.pt decides: its temperature and operating point, or why they were not fitted."""
    if d is None:
        return []
    from bonedeploy.artefacts.operating_point import OperatingPoint

    op = d.get("operating_point")
    t = (f"T = {d['temperature']:.4f}" if d.get("temperature_fitted", True)
         else "T = 1 (not fitted)")
    lines = ["## Decision (stored in best.pt)", "", f"- temperature: {t}",
             f"- operating point: {OperatingPoint.from_dict(op).describe() if op else 'not set (argmax)'}"]
    lines += [f"- **{note}**" for note in d.get("notes") or []]
    if (d.get("files") or {}).get("md"):
        lines.append(f"- details: {d['files']['md']}")
    lines.append("")
    if d.get("ood"):
        from bonedeploy.artefacts.ood import OODGate
        from bonedeploy.eval.ood import report_lines

        lines += report_lines(OODGate.from_dict(d["ood"]))
    return lines


def _report_row(name: str, row: dict[str, float]) -> list[str]:
    return [name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1-score']:.3f}",
            str(int(row["support"]))]


def plot_curves(history: Sequence[dict[str, Any]], saved_epoch: int | None, path: str | Path,
                title: str = "") -> Path:
    """Accuracy and loss, train vs val, with the saved epoch marked."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    for ax, key, label in zip(fig.subplots(1, 2), ("acc", "loss"), ("accuracy", "loss")):
        for part, style in (("train", "-"), ("val", "-")):
            ax.plot(ep, [h[f"{part}_{key}"] for h in history], style, marker="." if len(ep) < 30 else None,
                    label=part)
        if saved_epoch is not None:
            ax.axvline(saved_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"saved epoch {saved_epoch}")
            saved = [h[f"val_{key}"] for h in history if h["epoch"] == saved_epoch]
            ax.plot([saved_epoch] * len(saved), saved, "o", color="black", markersize=5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
