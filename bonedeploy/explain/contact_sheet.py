"""A contact sheet of Grad-CAM overlays on synthetic radiographs, with the drawn break boxed, and
the pointing-game score (share of fractured images whose map peaks on the break).

    python -m bonedeploy.explain.contact_sheet ENGINE SYNTH_DIR OUT.png [--n 8] [--images PATHS]

``SYNTH_DIR`` is a ``bonedeploy synth`` folder (its ``synth.json`` records each break's box in
centre-crop coordinates). Only the images named (default: the first fractured and normal ones of
the folder) are explained.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BAR = 22  # the overlay's label bar (explain.overlay)
MARGIN = 16  # px around the break box that still count as "on the break"


def break_boxes(synth_dir: Path) -> dict[str, Any]:
    meta = json.loads((synth_dir / "synth.json").read_text())
    return {str((synth_dir / im["path"]).resolve()): im.get("break_box_crop") for im in meta["images"]}


def pointing_game(written: list[dict[str, Any]], boxes: dict[str, Any]) -> dict[str, Any]:
    """For each fractured image: does the map's maximum lie within MARGIN px of the break box?"""
    hits, n = 0, 0
    for w in written:
        box = boxes.get(str(Path(w["path"]).resolve()))
        if not box:
            continue
        cam = np.load(w["npy"])
        y, x = np.unravel_index(int(cam.argmax()), cam.shape)
        x0, y0, x1, y1 = box
        n += 1
        hits += int(x0 - MARGIN <= x <= x1 + MARGIN and y0 - MARGIN <= y <= y1 + MARGIN)
    return {"fractured_images": n, "hits": hits, "margin_px": MARGIN}


def save_sheet(written: list[dict[str, Any]], boxes: dict[str, Any], out: Path, cols: int = 4,
               title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from bonedeploy.util.fs import atomic_path

    rows = -(-len(written) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.95 * rows), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, w in zip(axes.flat, written):
        ax.imshow(Image.open(w["png"]))
        box = boxes.get(str(Path(w["path"]).resolve()))
        if box:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0 - MARGIN, y0 - MARGIN + BAR), x1 - x0 + 2 * MARGIN,
                                   y1 - y0 + 2 * MARGIN, fill=False, ec="#00ff66", lw=0.9, ls="--"))
        truth = Path(w["path"]).parent.name
        ax.set_title(f"{Path(w['path']).name} (truth: {truth})", fontsize=7)
    fig.suptitle(title or "Grad-CAM overlays (green dashes: the drawn break)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    from bonedeploy.explain.run import ExplainConfig, explain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine", type=Path)
    ap.add_argument("synth_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=8, help="images on the sheet (3/4 fractured)")
    ap.add_argument("--score-n", type=int, default=0, help="also score the pointing game on this many "
                    "fractured images (0: only those on the sheet)")
    ap.add_argument("--val-of", type=Path, help="a checkpoint: use only its validation images "
                    "(never seen in training)")
    args = ap.parse_args(argv)
    frac = sorted((args.synth_dir / "Fractured").glob("*.png"))
    norm = sorted((args.synth_dir / "Normal").glob("*.png"))
    if args.val_of:
        from bonedeploy.artefacts.checkpoint import load_checkpoint

        split = load_checkpoint(args.val_of)["split"]
        val = {str((Path(split["root"]) / e["path"]).resolve()) for e in split["val"]}
        frac = [p for p in frac if str(p.resolve()) in val]
        norm = [p for p in norm if str(p.resolve()) in val]
    k = max(1, args.n * 3 // 4)
    chosen = frac[:k] + norm[:args.n - k]
    boxes = break_boxes(args.synth_dir)
    with tempfile.TemporaryDirectory() as tmp:
        res = explain(ExplainConfig(args.engine, tuple(chosen), Path(tmp) / "sheet"))
        save_sheet(res.written, boxes, args.out,
                   title=f"Grad-CAM at layer {res.layer} of {args.engine.name}; decision: "
                         f"{res.decision['rule']} (green dashes: the drawn break)")
        scored = res.written
        if args.score_n:
            scored = explain(ExplainConfig(args.engine, tuple(frac[:args.score_n]), Path(tmp) / "score")).written
        score = pointing_game(scored, boxes)
    print(json.dumps({"sheet": str(args.out), "pointing_game": score, "decision": res.decision,
                      "errors": res.errors}, indent=1))


if __name__ == "__main__":
    main()
