"""``bonedeploy models``: the registry as a table, with the seed's hyper-parameters and results."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from bonedeploy.ui.tables import KEY, Col, fit_table
from bonedeploy.models import get_model_entry, list_models


# (header, priority): lower priorities are dropped first on a narrow terminal; the name never.
COLUMNS = (Col("model", KEY, "left"), Col("family", 3, "left"), Col("params", 5), Col("drop", 4),
           Col("λ", 6), Col("lr", 2), Col("batch", 1), Col("epochs", 0), Col("seed val", 7),
           Col("seed ep", 0))


def models_table(family: str | None = None, width: int = 200) -> Table:
    rows = []
    for name in list_models(family):
        e = get_model_entry(name)
        d = e.defaults
        rows.append([name, e.family, f"{e.params:,}", str(e.kwargs.get("dropout", "–")),
                     f"{d.weight_decay:g}", f"{d.lr:.0e}", str(d.batch_size), str(d.epochs),
                     f"{e.seed.val_acc:.2f}", str(e.seed.saved_epoch)])
    from rich import box

    return fit_table(COLUMNS, rows, width, title="bonedeploy models (seed study variants)",
                     box=box.SIMPLE_HEAD)


def command(
    family: str = typer.Option(None, "--family", help="Only this family: vgg, alexnet, resnet."),
) -> None:
    """List the registered models with the seed's hyper-parameters and reported accuracy."""
    console = Console()
    console.print(models_table(family, console.width))
