"""read_image: every Pillow mode we promise, exact scaling, alpha, EXIF, and one typed error."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from bonedeploy.errors import ImageReadError
from bonedeploy.data.imageio import IMAGE_SUFFIXES, load_preprocessed, read_image
from bonedeploy.data.preprocess import PreprocessSpec

RNG = np.random.default_rng(7)
U8 = RNG.integers(0, 256, size=(9, 13), dtype=np.uint8)
U8_RGB = RNG.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)


def saved(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_suffixes_cover_the_promised_formats():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"} <= IMAGE_SUFFIXES
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "tiff"])
def test_lossless_8bit_gray_and_rgb_are_exact(tmp_path, ext):
    gray = read_image(saved(tmp_path, Image.fromarray(U8), f"g.{ext}"))
    rgb = read_image(saved(tmp_path, Image.fromarray(U8_RGB), f"c.{ext}"))
    assert gray.dtype == rgb.dtype == np.float32
    assert gray.shape == (9, 13, 1) and rgb.shape == (9, 13, 3)
    np.testing.assert_array_equal(gray[..., 0], U8.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(rgb, U8_RGB.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("ext", ["jpg", "jpeg"])
def test_jpeg_gray_and_rgb(tmp_path, ext):
    flat = np.full((16, 24), 128, np.uint8)
    gray = read_image(saved(tmp_path, Image.fromarray(flat), f"g.{ext}", quality=95))
    rgb = read_image(saved(tmp_path, Image.fromarray(np.dstack([flat] * 3)), f"c.{ext}"))
    assert gray.shape == (16, 24, 1) and rgb.shape == (16, 24, 3)
    assert abs(float(gray.mean()) - 128 / 255) < 0.01


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_is_scaled_by_65535_not_clipped(tmp_path, ext):
    arr = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    out = read_image(saved(tmp_path, img, f"x.{ext}"))
    assert out.shape == (1, 5, 1)
    np.testing.assert_allclose(out[0, :, 0], arr[0] / 65535.0, rtol=0, atol=1e-7)
    assert abs(out[0, 3, 0] - 40000 / 65535) < 1e-7  # 0.61, not 1.0 as convert("L") would give


def test_big_endian_16bit(tmp_path):
    arr = np.array([[1000, 40000, 65535]], dtype=np.uint16)
    img = Image.frombytes("I;16B", (3, 1), arr.astype(">u2").tobytes())
    path = saved(tmp_path, img, "be.tif")
    assert Image.open(path).mode == "I;16B"
    np.testing.assert_allclose(read_image(path)[0, :, 0], arr[0] / 65535.0, atol=1e-7)


def test_mode_i_rules(tmp_path):
    sixteen = np.array([[0, 40000, 65535]], dtype=np.int32)
    out = read_image(saved(tmp_path, Image.fromarray(sixteen, "I"), "i16.tif"))
    np.testing.assert_allclose(out[0, :, 0], sixteen[0] / 65535.0, atol=1e-7)
    wide = np.array([[0, 70000, 2**31 - 1]], dtype=np.int32)
    out = read_image(saved(tmp_path, Image.fromarray(wide, "I"), "i32.tif"))
    np.testing.assert_allclose(out[0, :, 0], wide[0] / (2**31 - 1), atol=1e-7)
    signed = np.array([[-1000, 0, 1000]], dtype=np.int32)
    out = read_image(saved(tmp_path, Image.fromarray(signed, "I"), "neg.tif"))
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.5, 1.0], atol=1e-7)  # min-max


def test_mode_f_rules(tmp_path):
    unit = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    out = read_image(saved(tmp_path, Image.fromarray(unit, "F"), "u.tif"))
    np.testing.assert_array_equal(out[0, :, 0], unit[0])  # already [0,1]: kept
    hu = np.array([[-1000.0, 0.0, 1000.0, np.nan]], dtype=np.float32)
    out = read_image(saved(tmp_path, Image.fromarray(hu, "F"), "hu.tif"))
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.5, 1.0, 0.0], atol=1e-7)


def test_mode_1_bilevel(tmp_path):
    img = Image.fromarray(np.eye(4, dtype=bool))
    assert img.mode == "1"
    out = read_image(saved(tmp_path, img, "b.png"))
    np.testing.assert_array_equal(out[..., 0], np.eye(4, dtype=np.float32))


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [255, 255, 255, 0]]], np.uint8)
    out = read_image(saved(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
    assert out.shape == (1, 3, 3)
    np.testing.assert_allclose(out[0, 0], np.array([200, 100, 50]) / 255, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], np.array([200, 100, 50]) / 255 * 128 / 255, atol=1e-6)
    np.testing.assert_array_equal(out[0, 2], [0, 0, 0])  # transparent white is background


def test_la_is_composited_and_stays_gray(tmp_path):
    la = np.array([[[255, 255], [255, 51], [90, 0]]], np.uint8)
    out = read_image(saved(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    assert out.shape == (1, 3, 1)
    np.testing.assert_allclose(out[0, :, 0], [1.0, 0.2, 0.0], atol=1e-6)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # 0: red (transparent), 1: green
    img.putdata([0, 1, 1])
    path = saved(tmp_path, img, "p.png", transparency=0)
    out = read_image(path)
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])  # transparent red -> black
    np.testing.assert_array_equal(out[0, 1], [0, 1, 0])
    opaque = read_image(saved(tmp_path, img, "p2.png"))  # no transparency: red stays red
    np.testing.assert_array_equal(opaque[0, 0], [1, 0, 0])


def test_gray_with_transparency_key(tmp_path):
    img = Image.fromarray(np.array([[10, 200, 200]], np.uint8))
    out = read_image(saved(tmp_path, img, "k.png", transparency=200))
    assert out.shape == (1, 3, 1)
    np.testing.assert_allclose(out[0, :, 0], [10 / 255, 0, 0], atol=1e-7)


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_cmyk_becomes_rgb(tmp_path, ext):
    img = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan
    out = read_image(saved(tmp_path, img, f"c.{ext}"))
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), [0, 1, 1], atol=0.02)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40), np.uint8)  # landscape as stored: H 20, W 40
    stored[:10, :20] = 255  # bright block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = saved(tmp_path, Image.fromarray(stored), "o.jpg", exif=exif, quality=95)
    out = read_image(path)[..., 0]
    assert out.shape == (40, 20)  # portrait after orientation
    assert out[:20, 10:].mean() > 0.9 and out[20:, :].mean() < 0.1  # block now top-right


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])  # raw strips hit a Pillow 13 bug
def test_tiff_orientation_is_applied(tmp_path, compression):
    stored = np.zeros((20, 40), np.uint8)
    stored[:10, :20] = 255
    kw = {"compression": compression} if compression else {}
    path = saved(tmp_path, Image.fromarray(stored), "o.tif", tiffinfo={0x0112: 6}, **kw)
    out = read_image(path)[..., 0]
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1) / np.float32(255))


def test_first_frame_of_a_stack(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (51, 204)]
    path = tmp_path / "stack.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(read_image(path), 0.2, atol=1e-7)


def test_load_preprocessed_uses_the_spec(tmp_path):
    path = saved(tmp_path, Image.fromarray(U8_RGB), "c.png")
    out = load_preprocessed(path, PreprocessSpec(crop_size=16))
    assert out.shape == (1, 16, 16) and out.dtype == np.float32


# ---------------------------------------------------------------- errors


def check_error(path, cause_part):
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path
    assert str(path) in str(info.value) and cause_part in info.value.cause
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    check_error(tmp_path / "nope.png", "file not found")


def test_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    check_error(tmp_path / "d.png", "directory")


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.png").write_bytes(b"")
    check_error(tmp_path / "z.png", "empty file")


def test_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("patient notes, not pixels\n")
    check_error(tmp_path / "t.png", "not an image")


def test_other_formats_are_not_decoded_even_if_named_png(tmp_path):
    path = saved(tmp_path, Image.fromarray(U8), "really_a_gif.png", format="GIF")
    check_error(path, "not an image in a supported format")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's note on the cut TIFF header
@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "tif"])
def test_truncated_file(tmp_path, ext):
    path = saved(tmp_path, Image.fromarray(RNG.integers(0, 256, (64, 64), np.uint8)), f"t.{ext}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    check_error(path, "truncated image data")
    path.write_bytes(data[:30])  # cut inside (or just after) the header
    check_error(path, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    path = saved(tmp_path, Image.fromarray(U8), "p.png")
    path.chmod(0)
    try:
        check_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_permission_error_is_named_even_as_root(tmp_path, monkeypatch):
    import bonedeploy.data.imageio as imageio

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = saved(tmp_path, Image.fromarray(U8), "p.png")
    monkeypatch.setattr(imageio, "open", deny, raising=False)  # shadows the builtin there only
    check_error(path, "permission denied")


@pytest.mark.parametrize("limit", [1000, 3000])  # 64*64 = 4096: above 2x limit, and in warn range
def test_decompression_bomb_limit_stays_on(tmp_path, monkeypatch, limit):
    path = saved(tmp_path, Image.fromarray(np.zeros((64, 64), np.uint8)), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    before = list(warnings.filters)
    check_error(path, f"image too large (4096 pixels > limit of {limit}")
    assert warnings.filters == before  # the warning->error switch was local
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    assert read_image(path).shape == (64, 64, 1)
