"""One preprocessing truth, on real files: numpy path == torchvision path (max abs diff <= 1e-6).

Images are written as PNG/JPEG/TIFF/BMP files covering sizes smaller and larger than the 400 crop,
odd widths/heights, non-square, RGB and grayscale, 8- and 16-bit.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from bonedeploy.data.imageio import read_image
from bonedeploy.data.preprocess import SEED_SPEC, preprocess_numpy
from bonedeploy.data.torch_preprocess import build_transform, preprocess_torch

# (file name, Pillow mode, height, width)
CASES = [
    ("gray8.png", "L", 397, 251),  # smaller than 400 on both axes, odd
    ("rgb8.png", "RGB", 251, 397),
    ("gray16.png", "I;16", 403, 517),  # larger, odd, non-square
    ("gray16.tif", "I;16", 399, 401),  # straddles the crop
    ("rgb8.tif", "RGB", 517, 403),
    ("gray8.jpg", "L", 401, 399),
    ("rgb8.jpg", "RGB", 123, 517),
    ("rgb8.bmp", "RGB", 399, 399),
    ("gray8.bmp", "L", 640, 380),
    ("rgba8.png", "RGBA", 380, 401),
]


def make_image(mode: str, h: int, w: int, seed: int) -> Image.Image:
    """A smooth gradient plus noise: JPEG-friendly and different at every pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx / max(w - 1, 1) * 0.6 + yy / max(h - 1, 1) * 0.3)[..., None]
    if mode == "I;16":
        return Image.fromarray(((base[..., 0] + 0.1 * rng.random((h, w))) * 65535)
                               .clip(0, 65535).astype(np.uint16))
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = (base + 0.1 * rng.random((h, w, channels))).clip(0, 1) * 255
    arr = arr.astype(np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("preprocess_files")
    out = {}
    for i, (name, mode, h, w) in enumerate(CASES):
        path = root / name
        make_image(mode, h, w, seed=i).save(path)
        out[name] = path
    return out


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_numpy_equals_torchvision_on_files(files, name):
    image = read_image(files[name])
    _, mode, h, w = next(c for c in CASES if c[0] == name)
    assert image.shape == (h, w, 1 if mode in ("L", "I;16") else 3)
    a = preprocess_numpy(image, SEED_SPEC)
    b = preprocess_torch(image, SEED_SPEC, train=False).numpy()
    assert a.shape == b.shape == SEED_SPEC.input_shape
    assert np.abs(a - b).max() <= 1e-6


@pytest.mark.parametrize("name", ["gray8.png", "rgb8.png", "gray16.png", "gray16.tif",
                                  "rgb8.tif", "gray8.bmp", "rgb8.jpg"])
def test_reader_equals_torchvision_decode_end_to_end(files, name):
    """The seed's own route (PIL -> tensor -> to float with torchvision's scaling -> transform)
    gives the same input tensor as our reader + numpy preprocessing, 16-bit included."""
    with Image.open(files[name]) as img:
        tensor = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
    ours = read_image(files[name])
    assert np.abs(ours.transpose(2, 0, 1) - tensor.numpy()).max() <= 1e-6
    seed_route = build_transform(SEED_SPEC, train=False)(tensor).numpy()
    assert np.abs(SEED_SPEC.apply(ours) - seed_route).max() <= 1e-6


def test_16bit_file_keeps_its_precision(files):
    """Values that differ only below the 8-bit step survive reading (no convert("L"))."""
    image = read_image(files["gray16.png"])
    assert len(np.unique(image)) > 256
