"""``synth --format dicom``: valid DX instances, made-up patients, studies of several images,
deterministic UIDs and bytes, pixels as the PNG renderer's."""

import shutil
import subprocess

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", minversion="3.0")

from bonedeploy.data.imageio import read_image  # noqa: E402
from bonedeploy.data.synth import SynthConfig, generate_dataset  # noqa: E402
from bonedeploy.data.synth.dicom import INSTANCES_PER_STUDY, patient_of  # noqa: E402
from bonedeploy.errors import ConfigError  # noqa: E402

SMALL = dict(n=7, seed=5, min_size=240, max_size=260)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root / "a", SynthConfig(image_format="dicom", **SMALL), workers=1)
    generate_dataset(root / "b", SynthConfig(image_format="dicom", **SMALL), workers=2)
    generate_dataset(root / "png", SynthConfig(image_format="png", bit_depth=16, **SMALL), workers=1)
    return root


def test_instances_group_into_studies_with_made_up_patients(written):
    files = sorted((written / "a").rglob("*.dcm"))
    assert len(files) == 7
    ds = [pydicom.dcmread(f) for f in files]
    assert {d.SOPClassUID for d in ds} == {"1.2.840.10008.5.1.4.1.1.1.1"} and {d.Modality for d in ds} == {"DX"}
    studies: dict[str, list] = {}
    for d in ds:
        studies.setdefault(d.StudyInstanceUID, []).append(d)
    assert sorted(map(len, studies.values())) == [1, INSTANCES_PER_STUDY, INSTANCES_PER_STUDY]
    for group in studies.values():  # one patient per study, one series per study
        assert len({str(d.PatientName) for d in group}) == 1 and len({d.SeriesInstanceUID for d in group}) == 1
        index = int(group[0].StudyID[1:])
        assert str(group[0].PatientName) == patient_of(5, index)["PatientName"]
    assert len({d.SOPInstanceUID for d in ds}) == 7


def test_same_config_same_bytes_whatever_the_workers(written):
    for f in sorted((written / "a").rglob("*.dcm")):
        assert f.read_bytes() == (written / "b" / f.relative_to(written / "a")).read_bytes()


def test_pixels_match_the_png_renderer(written):
    for f in sorted((written / "a").rglob("*.dcm"))[:3]:
        png = written / "png" / f.relative_to(written / "a").with_suffix(".png")
        a, b = read_image(f), read_image(png)
        assert a.shape == b.shape and np.abs(a - b).max() < 2e-3  # 12 bits vs 16 bits


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_finds_no_error_or_warning(written):
    f = sorted((written / "a").rglob("*.dcm"))[0]
    out = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    assert lines == ["DXImageForPresentation"], lines


def test_rgb_dicom_is_refused():
    with pytest.raises(ConfigError, match="drop --rgb"):
        SynthConfig(image_format="dicom", rgb=True)
