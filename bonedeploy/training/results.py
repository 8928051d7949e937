"""A sweep's results in the seed's table format (results.md, results.csv), ours beside the seed's.

Reads each run's report.json only (small), never the checkpoints.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from bonedeploy.util.fs import atomic_write, write_text

RESULT_COLUMNS = (
    "name", "model", "status", "hyperparameters", "epochs", "saved_epoch", "train_acc", "val_acc",
    "val_ci_low", "val_ci_high", "n_val", "f1", "train_loss", "val_loss", "sensitivity",
    "specificity", "roc_auc", "params", "train_seconds", "seed_epochs", "seed_saved_epoch",
    "seed_train_acc", "seed_val_acc", "seed_f1", "seed_train_loss", "seed_val_loss",
)
_FAMILY = {"vgg": "VGGNet", "alexnet": "AlexNet", "resnet": "ResNet"}


def result_row(name: str, run_dir: Path, failure: dict[str, Any] | None = None) -> dict[str, Any]:
    """One table row from ``run_dir/report.json`` (status "missing" when the run has none);
    ``failure``: the queued run failed in this sweep (status "failed", ``failure`` kept for the table)."""
    from bonedeploy.models import get_model_entry

    path = Path(run_dir) / "report.json"
    row: dict[str, Any] = {k: None for k in RESULT_COLUMNS}
    row["name"] = name
    if failure is not None:
        row["status"] = "failed"
        row["_failure"] = failure  # not a CSV column: results.md and sweep.json show it
        return row
    if not path.is_file():
        row["status"] = "missing"
        return row
    r = json.loads(path.read_text())
    entry = get_model_entry(r["model"])
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text()) \
        if (Path(run_dir) / "metrics.json").is_file() else {}
    v, t, s = r["val"], r["train"], r["seed"]
    row.update(
        model=r["model"], status="done", hyperparameters=r["hyperparameters"], epochs=r["completed_epochs"],
        saved_epoch=r["saved_epoch"], train_acc=t["accuracy"], val_acc=v["accuracy"],
        val_ci_low=v["accuracy_ci95"][0], val_ci_high=v["accuracy_ci95"][1], n_val=v["n"],
        f1=v.get("f1"), train_loss=t["loss"], val_loss=v["loss"], sensitivity=v.get("sensitivity"),
        specificity=v.get("specificity"), roc_auc=v.get("roc_auc"), params=r["params"],
        train_seconds=sum(h.get("seconds", 0.0) for h in metrics.get("history", [])),
        seed_epochs=entry.defaults.epochs, seed_saved_epoch=s["saved_epoch"],
        seed_train_acc=s["train_acc"], seed_val_acc=s["val_acc"], seed_f1=s["f1"],
        seed_train_loss=s["train_loss"], seed_val_loss=s["val_loss"],
    )
    return row


def _f(x: Any, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _pair(train: Any, val: Any, fmt: str = ".2f") -> str:
    """The seed's "(Train: 0.73) Val: 0.72" cell."""
    if train is None and val is None:
        return "–"
    return f"(Train: {_f(train, fmt)}) Val: {_f(val, fmt)}"


HEADER = ("Model", "Hyper parameters", "Epochs (saved ep)", "Accuracy (train, val)", "Val 95% CI", "F1",
          "Loss (train, val)", "# Params", "Seed: epochs (saved ep)", "Seed: accuracy", "Seed: F1",
          "Seed: loss", "Train time")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    from bonedeploy.ui.markdown import pipe_table

    return pipe_table(HEADER, [_cells(r) for r in rows])


def _cells(r: dict[str, Any]) -> list[str]:
    if r["status"] == "missing":
        return [r["name"], "(no report: not trained yet)", *[""] * (len(HEADER) - 2)]
    if r["status"] == "failed":
        f = r.get("_failure") or {}
        why = f"(failed, exit {f.get('exit_code')}: {f.get('error') or 'no output'}; log {f.get('log')})"
        return [r["name"], why, *[""] * (len(HEADER) - 2)]
    from bonedeploy.models import get_model_entry

    fam = _FAMILY.get(get_model_entry(r["model"]).family, "")
    return [
        f"{fam} `{r['name']}`".strip(), r["hyperparameters"],
        f"{r['epochs']} ({r['saved_epoch']})", _pair(r["train_acc"], r["val_acc"]),
        f"{r['val_ci_low']:.2f}–{r['val_ci_high']:.2f} (n={r['n_val']})", _f(r["f1"]),
        _pair(r["train_loss"], r["val_loss"], ".4f"), f"{r['params']:,}",
        f"{r['seed_epochs']} ({r['seed_saved_epoch']})", _pair(r["seed_train_acc"], r["seed_val_acc"]),
        _f(r["seed_f1"]), _pair(r["seed_train_loss"], r["seed_val_loss"], ".4f"),
        f"{r['train_seconds']:.1f} s",
    ]


def write_results(out: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``out/results.md`` and ``out/results.csv`` (atomic)."""
    out = Path(out)
    with atomic_write(out / "results.csv", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    done = [r for r in rows if r["status"] == "done"]
    total = sum(r["train_seconds"] or 0 for r in done)
    md = [
        "# Sweep results",
        "",
        f"Recipe `{meta.get('recipe')}` on `{meta.get('data')}`; {len(done)} of {len(rows)} runs "
        f"reported; training time {total:.1f} s in total (sum of epoch times; wall time of this "
        f"invocation {meta.get('seconds', 0):.1f} s).",
        "",
    ]
    if meta.get("command"):
        md += ["Command:", "", "```", meta["command"], "```", ""]
    md += [
        markdown_table(rows),
        "",
        "Accuracy is measured on the saved epoch's weights in eval mode, as the seed did; the 95% "
        "interval is Wilson's for the validation accuracy (with n=72 one image is 1.4 points). "
        "F1 is the macro F1 on validation. Our loss is the mean cross-entropy; the seed's reported "
        "losses (about 0.005-0.03) are on a different, unstated scale and only comparable "
        "to each other. The seed's columns are the study's reported numbers on its real radiographs.",
        "",
    ]
    write_text(out / "results.md", "\n".join(md))
