"""``bonedeploy merge preds-*.csv --out preds.csv``: the shards of one ``infer --shard`` run as one file.

Refused, with every problem named at once, unless the shards are of the same artefact (sha256),
the same decision rule, the same listing of the same archive and the same N, and every shard
0..N-1 is there and complete (its file final, not a ``.partial``; exactly its own images, each
once). The merged file holds every image exactly once, sorted by its path relative to the
archive root (the order an unsharded run writes), with the shards' rows unchanged.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.data.shard import Shard, shard_key
from bonedeploy.errors import ConfigError, DataError
from bonedeploy.infer.predictions import FORMAT_TAG, FORMATS, partial_path
from bonedeploy.infer.shard import RECORD_KEY, read_record
from bonedeploy.util.defaults import none_means_default
from bonedeploy.util.fs import atomic_write, write_json

# Record fields that must agree between shards (those a shard does not write are skipped).
SAME = ("engine_sha256", "decision", "ood")


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class MergeConfig:
    inputs: tuple[Path, ...]
    out: Path = Path("predictions.csv")


@dataclass
class ShardFile:
    path: Path
    record: dict[str, Any]
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # a JSON file's header fields

    @property
    def shard(self) -> dict[str, Any]:
        return self.record[RECORD_KEY]

    @property
    def label(self) -> str:
        return f"shard {self.shard['index']}/{self.shard['count']} ({self.path})"


@dataclass
class MergeResult:
    out: Path
    shards: int
    images: int
    ok: int
    engine: str | None
    sources: list[Path]


def run_record_of(path: Path) -> Path:
    from bonedeploy.infer.run import run_record_path

    return run_record_path(path)


def merge_predictions(cfg: MergeConfig) -> MergeResult:
    out = Path(cfg.out)
    files = [load_shard(Path(p)) for p in _check_inputs(cfg.inputs, out)]
    problems = mismatches(files) or completeness(files)
    if problems:
        raise ConfigError("cannot merge: " + "; ".join(problems))
    files.sort(key=lambda f: f.shard["index"])
    rows = sorted(((key, row) for f in files for key, row in zip(keys_of(f), f.rows)), key=lambda kr: kr[0])
    write_merged(out, files, [row for _, row in rows])
    return MergeResult(out, len(files), len(rows), sum(r.get("status") == "ok" for _, r in rows),
                       files[0].record.get("engine"), [f.path for f in files])


def _check_inputs(inputs: tuple[Path, ...], out: Path) -> list[Path]:
    if not inputs:
        raise DataError("no predictions files given: name the shards' files, e.g. preds-*.csv")
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format {out.suffix!r}; valid suffixes: {', '.join(FORMATS)}")
    paths = list(dict.fromkeys(Path(p) for p in inputs))
    if any(p.resolve() == out.resolve() for p in paths):
        raise ConfigError(f"--out {out} is one of the shards being merged; write the merged file elsewhere")
    suffixes = {p.suffix.lower() for p in paths}
    if len(suffixes) > 1:
        raise ConfigError(f"the shards mix formats ({', '.join(sorted(suffixes))}); give the .csv or the .json files")
    if suffixes != {out.suffix.lower()}:
        raise ConfigError(f"--out {out}: the shards are {suffixes.pop()} files; the merged file keeps their format")
    return paths


def load_shard(path: Path) -> ShardFile:
    record = read_record(run_record_of(path))
    if not path.is_file():
        partial = partial_path(path)
        more = f" (only {partial.name}: the run is still going or was killed)" if partial.is_file() else ""
        raise DataError(f"{path}: no such file{more}")
    if record is None or RECORD_KEY not in record:
        raise ConfigError(f"{path}: no shard record in {run_record_of(path).name}; merge takes the files "
                          "that infer --shard K/N wrote")
    f = ShardFile(path, record)
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            f.columns, f.rows = list(doc["columns"]), list(doc["rows"])
            f.meta = {k: v for k, v in doc.items() if k not in ("columns", "rows")}
        else:
            with open(path, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                f.rows, f.columns = list(reader), list(reader.fieldnames or [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable predictions file ({e})") from e
    return f


def mismatches(files: list[ShardFile]) -> list[str]:
    """Shards of different artefacts, rules, listings or N, and shard numbers given twice."""
    first, problems = files[0], []
    for name, get in [("N", lambda f: f.shard["count"]), ("listing of the archive", lambda f: f.shard["inputs_sha256"]),
                      *[(key, lambda f, k=key: f.record.get(k)) for key in SAME], ("columns", lambda f: f.columns)]:
        odd = [f for f in files if get(f) != get(first)]
        if odd:
            problems.append(f"{name} differs: {first.label} vs {', '.join(f.label for f in odd)}")
    seen: dict[int, ShardFile] = {}
    for f in files:
        k = f.shard["index"]
        if k in seen:
            problems.append(f"shard {k} given twice: {seen[k].path} and {f.path}")
        seen[k] = f
    return problems


def completeness(files: list[ShardFile]) -> list[str]:
    """Missing shards (with what is found of them beside the others) and incomplete ones."""
    count, problems = files[0].shard["count"], []
    given = {f.shard["index"] for f in files}
    strays = traces(files)
    for k in range(count):
        if k not in given:
            problems.append(f"shard {k}/{count} missing ({strays.get(k, 'no file of it given or found beside the others')})")
    for f in files:
        if partial_path(f.path).is_file():
            problems.append(f"{f.label} incomplete: {partial_path(f.path).name} exists (a run is going on or was "
                            "killed); finish it with infer --resume")
            continue
        keys = keys_of(f)
        wrong = [k for k in keys if not Shard(f.shard["index"], count).holds(k)]
        twice = len(keys) - len(set(keys))
        if len(keys) != f.shard["images"] or wrong or twice:
            problems.append(f"{f.label} incomplete: {len(set(keys) - set(wrong))} of its {f.shard['images']} images"
                            + (f", {len(wrong)} rows of other shards" if wrong else "")
                            + (f", {twice} rows twice" if twice else ""))
    return problems


def traces(files: list[ShardFile]) -> dict[int, str]:
    """What the folders of the given shards hold of the missing ones (their run records)."""
    digest, found = files[0].shard["inputs_sha256"], {}
    for folder in {f.path.parent for f in files}:
        for rec_path in sorted(folder.glob("*.run.json")):
            rec = read_record(rec_path) or {}
            entry = rec.get(RECORD_KEY) or {}
            if entry.get("inputs_sha256") != digest:
                continue
            out = rec_path.with_name(rec_path.name.removesuffix(".run.json"))
            partial = partial_path(out)
            if partial.is_file():
                found[entry["index"]] = (f"{partial.name}: {_lines(partial)} of {entry['images']} images so far; "
                                         "the run is going on or was killed: finish it with infer --resume")
            elif out.is_file():
                found[entry["index"]] = f"{out} exists: add it to the files to merge"
    return found


def _lines(partial: Path) -> int:
    text = partial.read_text(encoding="utf-8", errors="replace")
    n = sum(1 for line in text.splitlines() if line.strip())
    return max(0, n - 1) if partial.name.endswith(".csv.partial") else n  # the CSV header


def keys_of(f: ShardFile) -> list[str]:
    """Each row's path relative to the archive root, as the shard was chosen from it."""
    root = f.shard.get("root_arg") or f.shard["root"]
    try:
        return [shard_key(r["path"], root) for r in f.rows]
    except (KeyError, ValueError) as e:
        raise DataError(f"{f.path}: a row's path is not under the shard's input root {root} ({e})") from e


def write_merged(out: Path, files: list[ShardFile], rows: list[dict[str, Any]]) -> None:
    first = files[0]
    entry = {k: v for k, v in first.shard.items() if k not in ("index", "images")}
    merged = {**entry, "shards": [str(f.path) for f in files], "images": len(rows)}
    if out.suffix.lower() == ".json":
        doc = {"format": FORMAT_TAG, **{k: v for k, v in first.meta.items() if k != "format"},
               "merged": merged, "columns": first.columns, "rows": rows}
        with atomic_write(out) as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
    else:
        with atomic_write(out, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=first.columns)
            writer.writeheader()
            writer.writerows(rows)
    record = {k: first.record[k] for k in ("engine", *SAME) if k in first.record}
    write_json(run_record_of(out), {**record, "merged": merged})
