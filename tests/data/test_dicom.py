"""DICOM through read_image: rescale, VOI LUT / window, MONOCHROME1, RGB, clear errors."""

import sys

import numpy as np
import pytest

from bonedeploy.errors import ImageReadError
from bonedeploy.data.imageio import has_dicom_preamble, read_image

pydicom = pytest.importorskip("pydicom", minversion="3.0")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom import uid  # noqa: E402

STORED = np.array([[0, 1000, 2000, 3000, 4095]], dtype=np.uint16)


def new_dataset(transfer_syntax=uid.ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    return ds


def write_dicom(path, arr=STORED, photometric="MONOCHROME2", bits=12, **tags):
    ds = new_dataset()
    ds.set_pixel_data(arr, photometric, bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_minmax_without_voi_and_modality_rescale_is_applied(tmp_path):
    plain = read_image(write_dicom(tmp_path / "a.dcm"))
    assert plain.shape == (1, 5, 1) and plain.dtype == np.float32
    np.testing.assert_allclose(plain[0, :, 0], STORED[0] / 4095, atol=1e-6)
    # a negative slope flips the physical values: the rescale must have been applied
    flipped = read_image(write_dicom(tmp_path / "b.dcm", RescaleSlope=-1, RescaleIntercept=0))
    np.testing.assert_allclose(flipped[0, :, 0], 1 - STORED[0] / 4095, atol=1e-6)


def test_window_maps_its_edges_to_0_and_1(tmp_path):
    # rescale to "HU" (x - 1024), window centre 0, width 1001 (linear: edges at -500.5 / +499.5)
    path = write_dicom(tmp_path / "w.dcm", RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=0, WindowWidth=1001)
    stored = STORED[0].astype(float) - 1024  # -1024, -24, 976, 1976, 3071
    expected = np.clip((stored - (0 - 0.5)) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(path)[0, :, 0], expected, atol=1e-6)


def test_voi_lut_sequence_is_preferred(tmp_path):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 1000, 8])  # 4 entries from input 1000, 8-bit output
    item.add_new("LUTData", "US", [0, 50, 100, 200])
    arr = np.array([[0, 1000, 1001, 1002, 1003, 4095]], np.uint16)
    path = write_dicom(tmp_path / "l.dcm", arr, VOILUTSequence=[item],
                       WindowCenter=2000, WindowWidth=10)  # ignored: the LUT wins
    np.testing.assert_allclose(read_image(path)[0, :, 0],
                               [0, 0, 0.25, 0.5, 1.0, 1.0], atol=1e-6)


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    m2 = read_image(write_dicom(tmp_path / "m2.dcm"))
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)


def test_rgb(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[1, :, 2] = 51
    out = read_image(write_dicom(tmp_path / "c.dcm", rgb, "RGB", 8))
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out[1, 0], [1.0, 0.0, 0.2], atol=1e-6)


def test_detected_by_preamble_without_suffix(tmp_path):
    from bonedeploy.data.folders import list_images

    path = write_dicom(tmp_path / "IM0001")
    (tmp_path / "README").write_text("not dicom")
    assert has_dicom_preamble(path) and not has_dicom_preamble(tmp_path / "README")
    assert read_image(path).shape == (1, 5, 1)
    assert list_images(tmp_path) == ([path], 1)  # folder walks find suffix-less DICOM too


def fake_compressed(path, transfer_syntax):
    ds = new_dataset(transfer_syntax)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(40)])  # not a real codestream
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_compressed_without_decoder_names_syntax_and_package(tmp_path):
    from pydicom.pixels import get_decoder

    if get_decoder(uid.JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = fake_compressed(tmp_path / "ls.dcm", uid.JPEGLSLossless)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert str(path) in msg and "JPEG-LS" in msg and uid.JPEGLSLossless in msg
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in msg


def test_undecodable_compressed_data_is_a_clear_error(tmp_path):
    path = fake_compressed(tmp_path / "j2k.dcm", uid.JPEG2000Lossless)
    with pytest.raises(ImageReadError, match="JPEG 2000") as info:
        read_image(path)
    assert info.value.path == path and "\n" not in str(info.value)


def test_truncated_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", np.zeros((64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ImageReadError, match="truncated pixel data") as info:
        read_image(path)
    assert info.value.path == path


def test_dcm_suffix_but_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not a dicom file at all\n")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path and "\n" not in str(info.value)


def test_bomb_limit_applies_to_dicom(tmp_path, monkeypatch):
    from PIL import Image

    path = write_dicom(tmp_path / "big.dcm", np.zeros((64, 64), np.uint16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="image too large"):
        read_image(path)


def test_missing_pydicom_says_what_to_install(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "a.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(ImageReadError, match=r"pip install 'bonedeploy\[dicom\]'"):
        read_image(path)


@pytest.mark.parametrize("value", [0, 2048])
def test_constant_pixel_array_is_refused(tmp_path, value):
    """A zero-filled decode (a decoder failing silently) must not reach the model."""
    path = write_dicom(tmp_path / "flat.dcm", np.full((16, 16), value, np.uint16))
    with pytest.raises(ImageReadError, match=f"one constant value \\({value}\\)") as info:
        read_image(path)
    assert info.value.path == path


def test_constant_after_a_compressed_round_trip_is_refused(tmp_path):
    """Also after a real decoder (RLE Lossless, pydicom's own): the check is on the decoded array."""
    ds = new_dataset()
    ds.set_pixel_data(np.zeros((16, 16), np.uint16), "MONOCHROME2", 12)
    ds.compress(uid.RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"one constant value \(0\).*RLE Lossless"):
        read_image(tmp_path / "rle.dcm")
