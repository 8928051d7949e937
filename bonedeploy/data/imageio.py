"""Read any supported image file into one float32 H x W x C array in [0, 1].

Training, inference and bench all read through ``read_image`` so that a model sees the same
numbers whichever command loaded the file. Rules (decided once, here):

- Grayscale modes (1, L, LA, I;16*, I, F and grayscale DICOM) give C = 1; colour modes (RGB, RGBA,
  P, CMYK, YCbCr, RGB DICOM) give C = 3, even when the three channels happen to be equal.
- 8-bit data is divided by 255 and 16-bit data (I;16, I;16B, ...) by 65535: never through
  ``convert("L")``, which clips 16-bit values at 255.
- Mode I (32-bit signed; what some TIFFs and older Pillow 16-bit PNGs use): values within
  [0, 65535] are divided by 65535 (they are 16-bit data); larger non-negative values by 2**31 - 1;
  data with negative values has no absolute scale and is min-max normalised.
- Mode F (32-bit float): finite data already in [0, 1] is kept as is; anything else is min-max
  normalised (NaN and infinities -> 0). A constant image normalises to zeros.
- Alpha (RGBA, LA, P or L/RGB with a transparency key) is composited on black (premultiplied),
  so transparent padding reads as background, not as whatever colour hides under it.
- EXIF orientation is applied; multi-frame files (TIFF stacks) give their first frame; 16-bit RGB
  files are reduced to 8 bits per channel by Pillow itself.
- Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) stays on, and the range in
  which Pillow would only warn is treated as an error too (locally, never globally).
- Only Pillow's PNG, JPEG, BMP and TIFF decoders are used, whatever the file is called.
- Every failure (missing, directory, permission, empty, truncated, not an image, too large) raises
  ``ImageReadError(path, cause)``. ``LOAD_TRUNCATED_IMAGES`` is never set.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin  # noqa: F401
from PIL import TiffImagePlugin  # noqa: F401  (registered here: Image.open(formats=...) needs it)

from bonedeploy.errors import ImageReadError
from bonedeploy.data.preprocess import SEED_SPEC, PreprocessSpec

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})
# Only these Pillow decoders ever see our files (fewer parsers exposed to untrusted input; never
# e.g. EPS, which would run Ghostscript). JPEG includes MPO (camera JPEGs with extra frames).
PILLOW_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF")

_DICOM_MAGIC_OFFSET = 128
_EXIF_ORIENTATION = 0x0112
_U8 = np.float32(255.0)
_U16 = np.float32(65535.0)
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
# Modes Pillow can turn into RGB without losing anything we use.
_TO_RGB = {"CMYK", "YCbCr", "RGBX", "HSV"}


def has_image_suffix(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def has_dicom_preamble(path: str | Path) -> bool:
    """True when bytes 128..131 are b'DICM' (a DICOM Part 10 file, whatever its name)."""
    try:
        with open(path, "rb") as fh:
            return _is_dicom_head(fh.read(_DICOM_MAGIC_OFFSET + 4))
    except OSError:
        return False


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` to float32 H x W x C (C in {1, 3}) in [0, 1]; see the module rules."""
    path = Path(path)
    head = _read_head(path)
    if path.suffix.lower() in DICOM_SUFFIXES or _is_dicom_head(head):
        from bonedeploy.data.dicom import read_dicom  # pydicom is an optional extra

        return read_dicom(path)
    return _read_with_pillow(path)


def load_preprocessed(path: str | Path, spec: PreprocessSpec = SEED_SPEC) -> np.ndarray:
    """Read one file and apply the numpy preprocessing: C x crop x crop float32."""
    return spec.apply(read_image(path))


def _is_dicom_head(head: bytes) -> bool:
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _read_head(path: Path) -> bytes:
    """The first bytes of the file; turns every 'cannot even open it' case into one error."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + 4)
    except FileNotFoundError as e:
        raise ImageReadError(path, "file not found") from e
    except IsADirectoryError as e:
        raise ImageReadError(path, "is a directory, not an image file") from e
    except PermissionError as e:
        raise ImageReadError(path, "permission denied") from e
    except OSError as e:
        raise ImageReadError(path, f"cannot open ({e.strerror or e})") from e
    if not head:
        raise ImageReadError(path, "empty file (0 bytes)")
    return head


def _read_with_pillow(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse that range too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=PILLOW_FORMATS) as img:
                _avoid_pillow_tiff_orientation_bug(img)
                img.load()  # decode everything now, so truncation surfaces here
                return _to_float(_apply_exif_orientation(img))
        except ImageReadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageReadError(path, _bomb_cause(e)) from e
        except UnidentifiedImageError as e:
            raise ImageReadError(path, _unidentified_cause(path)) from e
        except OSError as e:
            if "truncated" in str(e).lower():
                raise ImageReadError(path, "truncated image data") from e
            raise ImageReadError(path, f"cannot decode image data ({_one_line(e)})") from e
        except _UnsupportedMode as e:
            raise ImageReadError(path, str(e)) from e
        except Exception as e:  # Pillow plugins raise SyntaxError, ValueError, struct.error ...
            raise ImageReadError(path, f"corrupt image data ({type(e).__name__}: {_one_line(e)})"
                                 ) from e


def _unidentified_cause(path: Path) -> str:
    """A known signature that Pillow still cannot parse is a damaged file, not 'not an image'."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    for magic, name in _SIGNATURES.items():
        if head.startswith(magic):
            return f"truncated or corrupt {name} file (its header cannot be parsed)"
    return "not an image in a supported format (not PNG, JPEG, BMP, TIFF or DICOM)"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _bomb_cause(error: Exception) -> str:
    # Pillow's own message names twice the limit in the error range; report the real limit.
    m = re.search(r"\((\d+) pixels\)", str(error))
    detail = (f"{m.group(1)} pixels > limit of {Image.MAX_IMAGE_PIXELS}" if m else str(error))
    return (f"image too large ({detail}; Pillow's decompression-bomb guard: "
            "raise PIL.Image.MAX_IMAGE_PIXELS only for files you trust)")


def _avoid_pillow_tiff_orientation_bug(img: Image.Image) -> None:
    """Pillow 13 gives an uncompressed TIFF with orientation 5-8 its rotated size before load and
    then decodes the raw strips into that swapped buffer: scrambled pixels (libtiff-decoded TIFFs
    are fine). Decoding at the stored size lets Pillow's own load-time rotation do the rest."""
    stored = getattr(img, "_tile_size", None)
    if img.format == "TIFF" and not getattr(img, "use_load_libtiff", True) and stored and (
            tuple(stored) != img.size):
        img._size = tuple(stored)


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    # exif_transpose copies the image even when there is nothing to do; skip that copy.
    if img.getexif().get(_EXIF_ORIENTATION, 1) in (0, 1):
        return img
    return ImageOps.exif_transpose(img)


class _UnsupportedMode(Exception):
    pass


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Reduce Pillow's many modes to the few ``_to_float`` handles."""
    mode = img.mode
    if mode in ("P", "PA"):
        return img.convert("RGBA" if mode == "PA" or img.has_transparency_data else "RGB")
    if mode in ("L", "RGB") and "transparency" in img.info:  # a colour key (PNG tRNS)
        return img.convert(mode + "A")
    if mode in ("La", "RGBa"):  # premultiplied: unpremultiply, we premultiply again later
        return img.convert(mode[:-1] + "A")
    if mode == "1":
        return img.convert("L")
    if mode in _TO_RGB:
        return img.convert("RGB")
    return img


def _to_float(img: Image.Image) -> np.ndarray:
    img = _normalise_mode(img)
    mode = img.mode
    if mode in ("L", "RGB"):
        out = np.asarray(img, dtype=np.float32) / _U8
    elif mode in ("LA", "RGBA"):
        arr = np.asarray(img, dtype=np.float32) / _U8
        out = arr[..., :-1] * arr[..., -1:]  # composite on black
    elif mode.startswith("I;16"):
        out = np.asarray(img).astype(np.float32) / _U16
    elif mode == "I":
        out = _scale_int32(np.asarray(img))
    elif mode == "F":
        out = _scale_float(np.asarray(img, dtype=np.float32))
    else:
        raise _UnsupportedMode(
            f"unsupported image mode {mode!r} (supported: 1, L, LA, P, RGB, RGBA, CMYK, YCbCr, "
            "I;16, I, F)"
        )
    if out.ndim == 2:
        out = out[..., None]
    return np.ascontiguousarray(out, dtype=np.float32)


def _scale_int32(arr: np.ndarray) -> np.ndarray:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        return _minmax(arr.astype(np.float64))
    scale = 65535.0 if hi <= 65535 else float(2**31 - 1)
    return (arr.astype(np.float64) / scale).astype(np.float32)


def _scale_float(arr: np.ndarray) -> np.ndarray:
    finite = np.isfinite(arr)
    if finite.all() and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        return arr
    return _minmax(np.where(finite, arr, np.nan).astype(np.float64))


def _minmax(arr: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1] ignoring NaN; NaN and constant images become 0."""
    if np.isnan(arr).all():
        return np.zeros(arr.shape, np.float32)
    lo, hi = np.nanmin(arr), np.nanmax(arr)
    out = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)
