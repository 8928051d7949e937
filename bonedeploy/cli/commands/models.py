"""``bonedeploy models``: the registry as a table, with the seed's hyper-parameters and results."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from bonedeploy.models import get_model_entry, list_models


def models_table(family: str | None = None) -> Table:
    t = Table(title="bonedeploy models (seed study variants)")
    t.add_column("model", no_wrap=True)
    t.add_column("family")
    for col in ("params", "drop", "λ", "lr", "batch", "epochs", "seed val", "seed ep"):
        t.add_column(col, justify="right", no_wrap=True)
    for name in list_models(family):
        e = get_model_entry(name)
        d = e.defaults
        t.add_row(name, e.family, f"{e.params:,}", str(e.kwargs.get("dropout", "–")),
                  f"{d.weight_decay:g}", f"{d.lr:.0e}", str(d.batch_size), str(d.epochs),
                  f"{e.seed.val_acc:.2f}", str(e.seed.saved_epoch))
    return t


def command(
    family: str = typer.Option(None, "--family", help="Only this family: vgg, alexnet, resnet."),
) -> None:
    """List the registered models with the seed's hyper-parameters and reported accuracy."""
    Console().print(models_table(family))
