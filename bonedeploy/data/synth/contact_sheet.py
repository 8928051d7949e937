"""A labelled grid of synthetic radiographs, for the README and for eyeballing a change."""

from __future__ import annotations

from pathlib import Path

from bonedeploy.util.fs import atomic_path
from bonedeploy.data.synth.config import SynthConfig
from bonedeploy.data.synth.dataset import image_rng
from bonedeploy.data.synth.render import render_case

# (row title, fractured, difficulty)
ROWS = (("Fractured (easy)", True, "easy"), ("Normal", False, "easy"),
        ("Fractured (medium)", True, "medium"), ("Fractured (hard)", True, "hard"))


def save_contact_sheet(path: str | Path, seed: int = 0, cols: int = 4, mark_breaks: bool = True,
                       min_size: int = 380, max_size: int = 640) -> Path:
    """Render ``len(ROWS) x cols`` images in memory and save them as one PNG.

    Each tile is the whole image; the dashed box is what the 400-px centre crop keeps, and a red
    circle (``mark_breaks``) points at the break so a reader can find the subtle ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    fig, axes = plt.subplots(len(ROWS), cols, figsize=(2.6 * cols, 2.75 * len(ROWS)), dpi=110,
                             squeeze=False)
    for r, (title, fractured, difficulty) in enumerate(ROWS):
        config = SynthConfig(n=1, seed=seed, difficulty=difficulty, min_size=min_size,
                             max_size=max_size)
        for c in range(cols):
            ax = axes[r][c]
            image, info = render_case(image_rng(seed, 1000 * r + c), fractured, config)
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
            h, w = image.shape
            x0, y0 = max(0, (w - 400) / 2), max(0, (h - 400) / 2)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), min(w, 400), min(h, 400), fill=False,
                                   ec="#4da3ff", lw=0.8, ls="--"))
            if mark_breaks and info.break_box is not None:
                bx0, by0, bx1, by1 = info.break_box
                ax.add_patch(Circle(((bx0 + bx1) / 2, (by0 + by1) / 2),
                                    0.75 * max(bx1 - bx0, by1 - by0) + 8, fill=False,
                                    ec="#ff4040", lw=0.9))
            label = f"{title}\n{w}x{h}" + (f", {info.bone}" if info.bone else "")
            ax.set_title(label, fontsize=7.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"bonedeploy synth (seed {seed}): blue dashes = 400 px centre crop, "
                 "red = break", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
