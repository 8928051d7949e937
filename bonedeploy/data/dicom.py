"""DICOM radiographs -> float32 H x W x C in [0, 1] (the optional ``[dicom]`` extra, pydicom >= 3).

Grayscale pipeline, as a DICOM viewer displays the image:
1. modality LUT / rescale slope+intercept (stored values -> physical values);
2. the first VOI LUT when present, else the first window centre/width, mapped onto [0, 1] by that
   transform's full output range (so the window's edges are 0 and 1, whatever this image contains);
   with neither, min-max of the rescaled values;
3. MONOCHROME1 (low values bright) inverted so that bone is bright, as in MONOCHROME2.
Colour (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR) is divided by its bit range; no
modality/VOI step applies to colour. Multi-frame files give their first frame. Pillow's
decompression-bomb limit applies to Rows x Columns as well. A frame that decodes to one constant
value is refused (``ImageReadError``), never passed on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bonedeploy.errors import ImageReadError

INSTALL_HINT = "pip install 'bonedeploy[dicom]'"
_PIP_NAMES = {"gdcm": "python-gdcm"}  # pydicom names the import, pip wants the distribution


def read_dicom(path: str | Path) -> np.ndarray:
    path = Path(path)
    pydicom = _import_pydicom(path)
    ds = _read_dataset(pydicom, path)
    _check_size(path, ds)
    _check_decoder(path, ds)
    arr = _pixel_array(path, ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        lut = apply_color_lut(arr, ds)
        top = float(np.iinfo(lut.dtype).max) if np.issubdtype(lut.dtype, np.integer) else 1.0
        return _unit(lut.astype(np.float64) / top)
    if arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (pydicom converts YBR to RGB)
        return _unit(arr.astype(np.float64) / (2.0 ** int(ds.get("BitsStored", 8)) - 1.0))
    out = _grayscale(arr, ds)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return _unit(out[..., None])


def _import_pydicom(path: Path):
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (pydicom >= 3)
    except ImportError as e:
        raise ImageReadError(path, f"reading DICOM needs pydicom >= 3: {INSTALL_HINT}") from e
    return pydicom


def _read_dataset(pydicom, path: Path):
    from pydicom.errors import InvalidDicomError

    try:
        # force=True reads old files without the 128-byte preamble (named *.dcm, so meant as DICOM)
        ds = pydicom.dcmread(path, force=True)
    except InvalidDicomError as e:
        raise ImageReadError(path, f"not a valid DICOM file ({e})") from e
    except Exception as e:
        raise ImageReadError(path, f"corrupt DICOM file ({type(e).__name__}: {e})") from e
    if "PixelData" not in ds:
        raise ImageReadError(path, "not a DICOM image (no Pixel Data element)")
    if "TransferSyntaxUID" not in ds.file_meta:  # preamble-less files: the DICOM default
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return ds


def _check_size(path: Path, ds) -> None:
    from PIL import Image

    pixels = int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
    limit = Image.MAX_IMAGE_PIXELS
    if limit and pixels > limit:
        raise ImageReadError(path, f"image too large ({pixels} pixels > limit of {limit})")


def _check_decoder(path: Path, ds) -> None:
    """A compressed transfer syntax with no installed decoder -> which package to install."""
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.TransferSyntaxUID
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as e:
        raise ImageReadError(
            path, f"pixel data uses transfer syntax {ts.name} ({ts}), which pydicom cannot decode"
        ) from e
    if decoder.is_available:
        return
    options = [_packages(dep) for dep in decoder.missing_dependencies]
    options = [o for o in options if o] or [["pylibjpeg"]]
    options.sort(key=lambda o: o[0] != "pylibjpeg")  # pip-installable everywhere: suggest first
    others = "; ".join(" ".join(o) for o in options[1:])
    raise ImageReadError(
        path,
        f"pixel data is compressed with {ts.name} ({ts}) and no decoder for it is installed: "
        f"pip install {' '.join(options[0])}" + (f" (or: {others})" if others else ""),
    )


def _packages(dependency: str) -> list[str]:
    """'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1' -> package names."""
    _, _, needs = dependency.partition("requires")
    names = [re.split(r"[<>=!~ ]", part.strip())[0] for part in needs.split(" and ")]
    return [_PIP_NAMES.get(n, n) for n in names if n and n != "numpy"]


def _pixel_array(path: Path, ds) -> np.ndarray:
    ts = ds.file_meta.TransferSyntaxUID
    try:
        arr = ds.pixel_array
    except Exception as e:
        detail = " ".join(str(e).split())  # pydicom's messages span lines; ours is one line
        what = ("truncated pixel data" if "less than expected" in detail
                else "cannot decode pixel data")
        raise ImageReadError(path, f"{what} ({ts.name}: {type(e).__name__}: {detail})") from e
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    _refuse_constant(path, arr, ts)
    return arr


def _refuse_constant(path: Path, arr: np.ndarray, ts) -> None:
    """A radiograph is never one flat value; a decoder that zero-fills a stream it cannot read
    (12-bit JPEG Lossless has done so elsewhere) produces exactly that, so it is refused here
    rather than passed on as a confident prediction about a blank image."""
    if arr.size and arr.min() == arr.max():
        raise ImageReadError(path, f"pixel data decodes to one constant value ({arr.flat[0]}) over "
                                   f"{' x '.join(map(str, arr.shape))} ({ts.name}): a blank image, or "
                                   "a decoder that filled it without an error")


def _grayscale(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(arr, ds)
    voi = _apply_voi(values, ds)
    if voi is not None:
        return voi
    return _minmax(np.asarray(values, dtype=np.float64))


def _apply_voi(values: np.ndarray, ds) -> np.ndarray | None:
    """VOI LUT (preferred, as pydicom's apply_voi_lut) or window, scaled by its output range."""
    from pydicom.pixels import apply_voi, apply_windowing

    try:
        if ds.get("VOILUTSequence"):
            n, first = ds.VOILUTSequence[0].LUTDescriptor[:2]
            values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
            out = apply_voi(values, ds)
            lut = apply_voi(np.arange(first, first + (n or 65536)), ds)
            lo, hi = float(lut.min()), float(lut.max())
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            out = apply_windowing(values, ds)
            with np.errstate(over="ignore"):
                lo, hi = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), ds))
        else:
            return None
    except (ValueError, NotImplementedError, AttributeError, IndexError):
        return None  # a malformed VOI module: show the data min-max rather than refuse it
    if hi == lo:
        return None
    return np.clip((np.asarray(out, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _unit(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), dtype=np.float32)
