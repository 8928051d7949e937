"""One definition of the seed's preprocessing, carried by every artefact.

The seed did: float in [0,1] -> CenterCrop(400) (zero-pads when smaller) -> RandomHorizontalFlip
(training only) -> Grayscale(1) with ITU-R 601-2 luma. No mean/std normalisation.

``PreprocessSpec`` is the data; this module holds the numpy implementation (no torch, for edge
runtimes); ``bonedeploy.data.torch_preprocess`` builds the torchvision pipeline from the same spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from bonedeploy.errors import ConfigError

SPEC_FORMAT = "bonedeploy.preprocess/1"


@dataclass(frozen=True)
class PreprocessSpec:
    crop_size: int = 400
    channels: int = 1
    # The reader maps every image to float [0,1]; "unit" records that contract.
    scale: str = "unit"
    # torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
    luma: tuple[float, float, float] = (0.2989, 0.587, 0.114)
    hflip_p: float = 0.5
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.crop_size <= 0:
            raise ConfigError(f"crop_size must be positive, got {self.crop_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be one of 1, 3; got {self.channels}")
        if self.scale != "unit":
            raise ConfigError(f"scale must be one of 'unit'; got {self.scale!r}")
        if not 0.0 <= self.hflip_p <= 1.0:
            raise ConfigError(f"hflip_p must be in [0, 1], got {self.hflip_p}")
        object.__setattr__(self, "luma", tuple(float(w) for w in self.luma))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of one preprocessed image."""
        return (self.channels, self.crop_size, self.crop_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["luma"] = list(self.luma)
        return {"format": SPEC_FORMAT, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        data = dict(data)
        fmt = data.pop("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise ConfigError(f"unknown preprocess format {fmt!r}; expected {SPEC_FORMAT!r}")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown preprocess keys {unknown}; valid keys: {sorted(valid)}")
        if "luma" in data:
            data["luma"] = tuple(data["luma"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        return cls.from_dict(json.loads(text))

    # numpy implementation (eval path; the flip is a training-time augmentation)
    def apply(self, image: np.ndarray) -> np.ndarray:
        """H x W x C float image in [0,1] (C = 1 or 3) -> C' x crop x crop float32."""
        return preprocess_numpy(image, self)

    def apply_batch(self, images: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(images), *self.input_shape), dtype=np.float32)
        for i, img in enumerate(images):
            out[i] = self.apply(img)
        return out


SEED_SPEC = PreprocessSpec()
"""The seed study's preprocessing."""


def _center_crop_offsets(size: int, crop: int) -> tuple[int, int, int]:
    """(pad_before, pad_after, crop_start) along one axis, as torchvision's center_crop.

    torchvision pads (crop - size) // 2 before and the rest after, then crops at
    int(round((size - crop) / 2)) -- Python's round, i.e. half to even.
    """
    if crop > size:
        before, after = (crop - size) // 2, (crop - size + 1) // 2
        return before, after, 0
    return 0, 0, int(round((size - crop) / 2.0))


def center_crop_numpy(image: np.ndarray, crop: int) -> np.ndarray:
    """Crop/pad an H x W x C array to crop x crop exactly as torchvision.CenterCrop."""
    h, w = image.shape[:2]
    pt, pb, top = _center_crop_offsets(h, crop)
    pl, pr, left = _center_crop_offsets(w, crop)
    if pt or pb or pl or pr:
        image = np.pad(image, ((pt, pb), (pl, pr), (0, 0)), mode="constant")
    return image[top : top + crop, left : left + crop]


def to_grayscale_numpy(image: np.ndarray, luma: tuple[float, float, float]) -> np.ndarray:
    """H x W x C -> H x W x 1 with torchvision's float arithmetic."""
    if image.shape[2] == 1:
        return image
    if image.shape[2] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {image.shape[2]}")
    r, g, b = (image[..., i] for i in range(3))
    wr, wg, wb = (np.float32(w) for w in luma)
    return (r * wr + g * wg + b * wb)[..., None]


def preprocess_numpy(image: np.ndarray, spec: PreprocessSpec = SEED_SPEC) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W x {{1,3}} image, got shape {image.shape}")
    image = np.asarray(image, dtype=np.float32)
    image = center_crop_numpy(image, spec.crop_size)
    if spec.channels == 1:
        image = to_grayscale_numpy(image, spec.luma)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    out = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    if spec.mean is not None:
        out = (out - np.float32(spec.mean)) / np.float32(spec.std or 1.0)
    return out
