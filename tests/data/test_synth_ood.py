"""Generated non-radiographs: every kind, deterministic, in range, registry rules."""

import numpy as np
import pytest

from bonedeploy.data.synth.ood import FAR, NEAR, kinds, make_images, register_kind
from bonedeploy.errors import ConfigError


@pytest.mark.parametrize("kind", FAR + NEAR)
def test_every_kind_is_deterministic_square_and_in_the_unit_range(kind):
    a, b = make_images(kind, 2, 128, seed=5), make_images(kind, 2, 128, seed=5)
    assert all(x.shape == (128, 128) and x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(0.0 <= x.min() and x.max() <= 1.0 for x in a)
    assert not np.array_equal(a[0], make_images(kind, 1, 128, seed=6)[0]) or kind == "blank"


def test_blank_images_are_one_grey_level_and_the_others_are_not():
    assert all(np.ptp(x) == 0 for x in make_images("blank", 6, 64))
    assert all(np.ptp(x) > 0.1 for k in ("noise", "text", "chest", "inverted") for x in make_images(k, 2, 128))


def test_the_registry_refuses_a_second_kind_of_a_name_and_lists_the_valid_ones():
    assert set(FAR + NEAR) == set(kinds())
    with pytest.raises(ValueError, match="already"):
        register_kind("text", lambda rng, size: np.zeros((size, size)))
    with pytest.raises(ConfigError, match="valid: blank"):
        make_images("selfie", 1)
