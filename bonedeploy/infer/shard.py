"""``infer --shard K/N``: keep this shard's images, and record what ``merge`` checks.

The run record (``<out>.run.json``, beside the predictions file, CSV or JSON) gets a ``shard``
entry: K and N, the input root, how many images the whole input has and the digest of their
relative paths (equal for every shard of one archive), and how many are this shard's. (``root_arg``
is the root as given: the rows' paths start with it, so ``merge`` finds each row's relative path.) ``merge``
reads it back; ``--resume`` refuses to continue a file of another shard or another listing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from bonedeploy.data.shard import Shard, listing_digest, shard_key
from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import write_json

RECORD_KEY = "shard"


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def select(shard: Shard | None, inputs: Sequence[Path], paths: list[Path], out: Path, run_record: Path,
           resume: bool) -> tuple[list[Path], dict[str, Any] | None]:
    """(this shard's paths, its record entry); all paths and None without ``--shard``."""
    if shard is None:
        return paths, None
    folders = [Path(p) for p in inputs]
    if len(folders) != 1 or not folders[0].is_dir():
        raise ConfigError(f"--shard {shard}: give one input folder, the archive root (got "
                          f"{', '.join(map(str, inputs))}): an image's shard is a hash of its path "
                          f"relative to that folder")
    root = folders[0]
    keys = [shard_key(p, root) for p in paths]
    mine = [p for p, k in zip(paths, keys) if shard.holds(k)]
    entry = {"index": shard.index, "count": shard.count, "root": os.path.abspath(root), "root_arg": str(root),
             "inputs": len(paths), "inputs_sha256": listing_digest(keys), "images": len(mine)}
    if resume:
        check_resumable(out, run_record, entry)
    return mine, entry


def check_resumable(out: Path, run_record: Path, entry: dict[str, Any]) -> None:
    """``--resume`` continues this shard of this listing only."""
    before = (read_record(run_record) or {}).get(RECORD_KEY)
    if before is None:
        return
    if (before.get("index"), before.get("count")) != (entry["index"], entry["count"]):
        raise ConfigError(f"{out} holds shard {before.get('index')}/{before.get('count')}, not "
                          f"{entry['index']}/{entry['count']}: resume it with the same --shard, or write "
                          "to another --out")
    if before.get("inputs_sha256") != entry["inputs_sha256"]:
        raise ConfigError(f"{out} was written over another listing of {entry['root']} ({before.get('inputs')} "
                          f"images then, {entry['inputs']} now): the archive changed, so the shards would "
                          "no longer add up; start the shards again into new files")


def record(run_record: Path, entry: dict[str, Any] | None, engine: str, engine_sha256: str | None) -> None:
    """Add the shard entry to the run record (written by ``infer.run`` just before)."""
    if entry is None:
        return
    doc = read_record(run_record) or {"engine": engine, "engine_sha256": engine_sha256}
    doc[RECORD_KEY] = entry
    write_json(run_record, doc)
