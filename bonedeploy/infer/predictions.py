"""The predictions file of ``bonedeploy infer``: written incrementally, finished atomically, resumable.

While a run is going, rows are appended to ``<out>.partial`` (CSV rows, or JSON Lines for a
``.json`` output) and fsync'd after every batch, so a killed run loses at most the batch in flight.
At the end the complete file is written to ``<out>`` atomically and the partial removed: ``<out>``
exists only when it is complete. ``--resume`` reads ``<out>.partial`` when an interrupted run left
one (it begins with every row that run itself resumed from; a torn last line is dropped), else
``<out>``, and skips the images already there. A fresh run leaves an older ``<out>`` in place until
its own replaces it.

Columns: path, predicted, p_<class> for each class, ood_score (the out-of-distribution score;
empty when the artefact computes none), status (``ok``, ``rejected: out of distribution (...)``
with no prediction, or ``error: <cause>``), and label when the inputs have labels.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import atomic_write, path_key

FORMATS = (".csv", ".json")
FORMAT_TAG = "bonedeploy.predictions/1"
OOD_COLUMN = "ood_score"


def prob_column(cls: str) -> str:
    return f"p_{cls}"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


class PredictionStore:
    def __init__(self, out: str | Path, classes: Sequence[str], with_label: bool = False):
        self.out = Path(out)
        self.suffix = self.out.suffix.lower()
        if self.suffix not in FORMATS:
            raise ConfigError(f"--out {self.out}: unknown format {self.suffix!r}; valid suffixes: {', '.join(FORMATS)}")
        self.classes = list(classes)
        self.columns = ["path", "predicted", *map(prob_column, self.classes), OOD_COLUMN, "status"]
        if with_label:
            self.columns.append("label")
        self.partial = partial_path(self.out)
        self._fh = None
        self._csv = None

    # reading (resume) -------------------------------------------------------------------------
    def read_existing(self) -> list[dict[str, Any]]:
        """Rows already written: the partial of an interrupted run when there is one (it starts
        with every row that run resumed from), else the finished file."""
        src = self.partial if self.partial.is_file() else self.out
        if not src.is_file():
            return []
        rows = {path_key(r["path"]): r for r in self._read_file(src, partial=src == self.partial)}
        return list(rows.values())

    def _read_file(self, src: Path, partial: bool) -> list[dict[str, Any]]:
        text = src.read_text(encoding="utf-8")
        if partial and text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a torn last line from a kill mid-write
        try:
            if self.suffix == ".json" and not partial:
                raw = json.loads(text)["rows"] if text.strip() else []
            elif self.suffix == ".json":
                raw = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                raw = list(csv.DictReader(text.splitlines()))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"--resume: cannot read {src} ({e}); move it away to start afresh") from e
        return [r for r in (self._parse(row) for row in raw) if r is not None]

    def _parse(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """A row as written, or None when it is incomplete (it will be redone)."""
        try:
            path, status = row["path"], row["status"]
            if not path or not status:
                return None
            probs = None
            if status == "ok":
                probs = [float(row[prob_column(c)]) for c in self.classes]
                if not all(math.isfinite(p) for p in probs):
                    return None
            score = row.get(OOD_COLUMN)  # absent from files written before the OOD gate
            score = float(score) if score not in (None, "") else None
        except (KeyError, TypeError, ValueError):
            return None
        return {"path": str(path), "probs": probs, "status": str(status), "ood_score": score}

    # writing ----------------------------------------------------------------------------------
    def begin(self, existing: Iterable[dict[str, Any]]) -> None:
        """Start a fresh partial holding ``existing`` (atomically), then open it for appending."""
        with atomic_write(self.partial, newline="" if self.suffix == ".csv" else None) as fh:
            if self.suffix == ".csv":
                w = csv.writer(fh)
                w.writerow(self.columns)
                w.writerows(self._csv_row(r) for r in existing)
            else:
                fh.writelines(json.dumps(self._json_row(r)) + "\n" for r in existing)
        self._fh = open(self.partial, "a", encoding="utf-8", newline="")
        self._csv = csv.writer(self._fh) if self.suffix == ".csv" else None

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if self._csv is not None:
            self._csv.writerows(self._csv_row(r) for r in rows)
        else:
            self._fh.writelines(json.dumps(self._json_row(r)) + "\n" for r in rows)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = self._csv = None

    def finish(self, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
        """Write the complete file atomically, then drop the partial."""
        self.close()
        if self.suffix == ".csv":
            with atomic_write(self.out, newline="") as fh:
                w = csv.writer(fh)
                w.writerow(self.columns)
                w.writerows(self._csv_row(r) for r in rows)
        else:
            doc = {"format": FORMAT_TAG, **meta, "columns": self.columns,
                   "rows": [self._json_row(r) for r in rows]}
            with atomic_write(self.out) as fh:
                json.dump(doc, fh, indent=1)
                fh.write("\n")
        self.partial.unlink(missing_ok=True)

    # row formats ------------------------------------------------------------------------------
    def _fields(self, row: dict[str, Any]) -> dict[str, Any]:
        probs = row.get("probs")
        d = {"path": row["path"], "predicted": row.get("predicted")}
        for i, c in enumerate(self.classes):
            d[prob_column(c)] = None if probs is None else round(float(probs[i]), 6)
        score = row.get("ood_score")
        # 6 significant digits; not a number (the row is refused) is written empty
        d[OOD_COLUMN] = float(f"{float(score):.6g}") if score is not None and math.isfinite(score) else None
        d["status"] = row["status"]
        if "label" in self.columns:
            d["label"] = row.get("label")
        return d

    def _csv_row(self, row: dict[str, Any]) -> list[str]:
        d = self._fields(row)
        return ["" if d[c] is None else (f"{d[c]:.6g}" if c == OOD_COLUMN else f"{d[c]:.6f}")
                if isinstance(d[c], float) or d[c] is None else str(d[c]) for c in self.columns]

    def _json_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return self._fields(row)
