"""Synthetic lateral elbow radiographs (Fractured / Normal) for demos and tests.

The seed's data set is not available, so every demo and test uses look-alikes made here:
``render_radiograph`` for one image in memory, ``generate_dataset`` for an image-folder tree.
"""

from bonedeploy.data.synth.config import DIFFICULTIES, BreakPreset, SynthConfig
from bonedeploy.data.synth.dataset import generate_dataset, image_rng, read_answers
from bonedeploy.data.synth.render import RenderInfo, render_case, render_radiograph

__all__ = ["DIFFICULTIES", "BreakPreset", "RenderInfo", "SynthConfig", "generate_dataset",
           "image_rng", "read_answers", "render_case", "render_radiograph"]
