"""``bonedeploy merge preds-*.csv --out preds.csv``: the files of ``infer --shard K/N`` as one."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib

COMMAND_KWARGS = {"no_args_is_help": True}
_MERGE = "bonedeploy.infer.merge"


def command(
    inputs: list[Path] = typer.Argument(..., help="The shards' predictions files (preds-*.csv), each with "
                                        "its <file>.run.json.", show_default=False),
    out: Path = opts.out("The merged predictions file (.csv or .json, as the shards).",
                         lib(_MERGE, "MergeConfig.out")),
    quiet: bool = opts.quiet(),
) -> None:
    """Merge the predictions files of infer --shard K/N into one, every image exactly once.

    Refused, naming each problem, unless the files are of the same artefact (sha256), decision
    rule, archive listing and N, and every shard 0..N-1 is there and complete; a missing shard's
    .partial beside the others is named with how far it got. The rows are kept as the shards wrote
    them, sorted by path (the order of an unsharded run); <out>.run.json records the merge."""
    from bonedeploy.infer.merge import MergeConfig, merge_predictions

    result = merge_predictions(MergeConfig(inputs=tuple(inputs), out=out))
    line = (f"merged {result.shards} shards: {result.images} images ({result.ok} ok, "
            f"{result.images - result.ok} not) of {result.engine} -> {result.out}")
    print(line)  # the final line, with or without --quiet
