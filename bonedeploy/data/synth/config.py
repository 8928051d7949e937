"""What the synthetic-radiograph generator makes: the dataset config and the difficulty presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from bonedeploy.errors import ConfigError
from bonedeploy.util.defaults import none_means_default

SYNTH_FORMAT = "bonedeploy.synth/1"


@dataclass(frozen=True)
class BreakPreset:
    """How conspicuous a fracture is. Lengths are fractions of the broken bone's shaft radius."""

    gap: tuple[float, float]  # width of the lucent line
    displacement: tuple[float, float]  # sideways shift of the moved fragment (cortical step-off)
    angulation_deg: tuple[float, float]
    obliquity_deg: tuple[float, float]  # tilt of the line away from perpendicular to the shaft
    lucency: tuple[float, float]  # fraction of bone removed inside the gap (1 = fully lucent)
    extent: tuple[float, float]  # fraction of the shaft width the line crosses (1 = complete)
    swelling: tuple[float, float]  # soft-tissue swelling (haematoma) over the break
    bones: tuple[tuple[str, float], ...] = (("humerus", 0.5), ("ulna", 0.25), ("radius", 0.25))
    site: tuple[float, float] = (0.0, 1.0)  # where along the breakable shaft (0 = near the joint)
    framing: float = 0.2  # how far (fraction of the crop) the film's centre is from the break


# Registry, not a switch: add a preset here and it becomes a valid --difficulty.
DIFFICULTIES: dict[str, BreakPreset] = {
    # A CNN trained from scratch on ~200 images must learn this in a few epochs: a displaced
    # supracondylar fracture (the commonest elbow fracture in children) with a wide, fully
    # lucent gap, an obvious step-off and angulation, and the swelling over it.
    "easy": BreakPreset(gap=(0.7, 1.1), displacement=(1.0, 1.5), angulation_deg=(10, 18),
                        obliquity_deg=(0, 20), lucency=(1.0, 1.0), extent=(1.0, 1.0),
                        swelling=(0.8, 1.3), bones=(("humerus", 1.0),), site=(0.0, 0.45),
                        framing=0.06),
    "medium": BreakPreset(gap=(0.16, 0.3), displacement=(0.12, 0.4), angulation_deg=(2, 9),
                          obliquity_deg=(0, 35), lucency=(0.8, 1.0), extent=(1.0, 1.0),
                          swelling=(0.2, 0.6), framing=0.18),
    # Hairline: a one-to-two pixel line, partly lucent, often not across the whole shaft.
    "hard": BreakPreset(gap=(0.05, 0.1), displacement=(0.0, 0.08), angulation_deg=(0, 2.5),
                        obliquity_deg=(0, 45), lucency=(0.45, 0.8), extent=(0.55, 1.0),
                        swelling=(0.0, 0.2), framing=0.22),
}

IMAGE_FORMATS = ("png", "jpeg", "dicom")  # dicom: DX instances (bonedeploy.data.synth.dicom)
BIT_DEPTHS = (8, 16)


def _choices(values) -> str:
    return ", ".join(str(v) for v in values)


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class SynthConfig:
    """One synthetic dataset: ``n`` labelled images (+ ``test_n`` unlabelled) from ``seed``."""

    n: int = 200
    seed: int = 0
    difficulty: str = "easy"
    test_n: int = 0
    image_format: str = "png"
    bit_depth: int = 8
    rgb: bool = False
    fractured_fraction: float = 0.5
    min_size: int = 380
    max_size: int = 640
    marker_p: float = 0.35  # share of images with an "R"/"L" side marker
    crop_size: int = 400  # the classifier's centre crop: every break lies inside it
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        self._check_counts()
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(f"unknown difficulty {self.difficulty!r}; "
                              f"choose one of: {_choices(DIFFICULTIES)}")
        fmt = {"jpg": "jpeg"}.get(str(self.image_format).lower(), str(self.image_format).lower())
        if fmt not in IMAGE_FORMATS:
            raise ConfigError(f"unknown image format {self.image_format!r}; "
                              f"choose one of: {_choices(IMAGE_FORMATS)}")
        object.__setattr__(self, "image_format", fmt)
        if self.bit_depth not in BIT_DEPTHS:
            raise ConfigError(f"bit depth must be one of: {_choices(BIT_DEPTHS)}; "
                              f"got {self.bit_depth}")
        if self.bit_depth == 16 and (fmt != "png" or self.rgb):
            raise ConfigError("16-bit output is grayscale PNG only (JPEG and RGB PNG hold 8 bits); "
                              "use --bit-depth 8 with --format jpeg or --rgb")
        if fmt == "dicom" and self.rgb:
            raise ConfigError("--format dicom writes grayscale radiographs (12-bit DX); drop --rgb")
        self._check_fractions_and_sizes()

    def _check_counts(self) -> None:
        if not isinstance(self.n, int) or self.n < 0:
            raise ConfigError(f"n must be an integer >= 0, got {self.n!r}")
        if not isinstance(self.test_n, int) or self.test_n < 0:
            raise ConfigError(f"test_n must be an integer >= 0, got {self.test_n!r}")
        if self.n + self.test_n == 0:
            raise ConfigError("nothing to generate: n and test_n are both 0")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")

    def _check_fractions_and_sizes(self) -> None:
        for name in ("fractured_fraction", "marker_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.crop_size < 128:
            raise ConfigError(f"crop_size must be >= 128, got {self.crop_size}")
        # Below ~0.6 x crop the arm is too small to place a break with a margin inside the crop.
        lo = max(128, int(0.6 * self.crop_size))
        if not lo <= self.min_size <= self.max_size <= 4096:
            raise ConfigError(f"need {lo} <= min_size <= max_size <= 4096; "
                              f"got min_size={self.min_size}, max_size={self.max_size}")

    @property
    def preset(self) -> BreakPreset:
        return DIFFICULTIES[self.difficulty]

    @property
    def suffix(self) -> str:
        return {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}[self.image_format]

    def to_dict(self) -> dict[str, Any]:
        return {"format": SYNTH_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SynthConfig":
        data = dict(data)
        data.pop("format", None)
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown synth config keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)
