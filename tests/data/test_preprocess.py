"""PreprocessSpec: serialisation and numpy == torchvision on arrays of every awkward shape.

File-based cases (8/16-bit PNG, RGB, JPEG ...) live in tests/test_imageio.py.
"""

import json

import numpy as np
import pytest
import torch

from bonedeploy.errors import ConfigError
from bonedeploy.data.preprocess import SEED_SPEC, PreprocessSpec, preprocess_numpy
from bonedeploy.data.torch_preprocess import build_transform, preprocess_torch

SHAPES = [(400, 400), (399, 401), (401, 399), (123, 517), (640, 380), (1, 1), (403, 403), (800, 600)]


def test_seed_spec_is_the_seed():
    assert SEED_SPEC.crop_size == 400 and SEED_SPEC.channels == 1 and SEED_SPEC.hflip_p == 0.5
    assert SEED_SPEC.mean is None and SEED_SPEC.std is None
    assert SEED_SPEC.input_shape == (1, 400, 400)


def test_round_trips_through_dict_and_json():
    spec = PreprocessSpec(crop_size=224, hflip_p=0.0)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["crop_size"] == 224


def test_unknown_keys_are_refused_with_valid_list():
    with pytest.raises(ConfigError, match="valid keys"):
        PreprocessSpec.from_dict({"crop_size": 400, "resize": 256})


def test_invalid_values_are_refused():
    with pytest.raises(ConfigError, match="channels"):
        PreprocessSpec(channels=2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_numpy_matches_torchvision(shape, channels):
    rng = np.random.default_rng(hash((shape, channels)) % 2**32)
    img = rng.random((*shape, channels), dtype=np.float32)
    a = preprocess_numpy(img, SEED_SPEC)
    b = preprocess_torch(img, SEED_SPEC, train=False).numpy()
    assert a.shape == b.shape == (1, 400, 400)
    assert np.abs(a - b).max() <= 1e-6


def test_padding_is_zero_and_centred_like_torchvision():
    img = np.ones((100, 101, 1), dtype=np.float32)
    out = preprocess_numpy(img, SEED_SPEC)[0]
    rows, cols = np.nonzero(out)
    assert (rows.min(), rows.max()) == (150, 249)
    assert (cols.min(), cols.max()) == (149, 249)  # the odd pixel of padding goes after


def test_train_transform_flips_horizontally():
    img = np.zeros((400, 400, 1), dtype=np.float32)
    img[:, :10] = 1.0
    torch.manual_seed(0)
    t = build_transform(PreprocessSpec(hflip_p=1.0), train=True)
    out = t(torch.from_numpy(img.transpose(2, 0, 1).copy()))
    assert out[0, :, -10:].min() == 1.0 and out[0, :, :10].max() == 0.0
