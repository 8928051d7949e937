"""The TID 1500 report: what it says, that it re-reads (highdicom, dciodvfy), where it is filed."""

import copy
import shutil
import subprocess

import pytest

pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom", minversion="3.0")

from bonedeploy.artefacts.dicom_sr import Algorithm, Finding, build_report, read_finding  # noqa: E402
from bonedeploy.artefacts.dicom_sr_encode import write_report  # noqa: E402
from bonedeploy.data.synth.dicom import encode_dicom  # noqa: E402

ALGO = Algorithm(model="resnet18", artefact_sha256="ab" * 32, version="9.9.9")


@pytest.fixture
def source(tmp_path):
    import io

    import numpy as np

    image = np.linspace(0, 1, 48 * 40).reshape(48, 40)
    return pydicom.dcmread(io.BytesIO(encode_dicom(image, seed=3, index=4)))


def test_finding_round_trips_and_is_filed_in_the_source_study(tmp_path, source):
    import highdicom as hd

    finding = Finding(present=True, probability=0.912345, threshold=0.3, target_sensitivity=0.95, ood_score=0.25)
    path = write_report(tmp_path / "r.dcm", source, finding, ALGO)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert read_finding(sr) == (finding, [source.SOPInstanceUID])
    for key in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber"):
        assert sr.get(key) == source.get(key), key
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID  # a new series in that study
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # The algorithm is identified: name, version, model and artefact hash.
    text = " | ".join(_texts(sr))
    assert "bonedeploy fracture classifier" in text and "9.9.9" in text
    assert f"artefact_sha256={'ab' * 32}" in text and "model=resnet18" in text
    codes = {(c.CodeValue, c.CodingSchemeDesignator) for c in _codes(sr)}
    assert {("125605004", "SCT"), ("52101004", "SCT"), ("16953009", "SCT"), ("122157", "DCM")} <= codes


def test_absent_and_not_analysed(tmp_path, source):
    absent = Finding(present=False, probability=0.01, threshold=0.3)
    assert read_finding(build_report(source, absent, ALGO))[0] == absent
    refused = Finding.refused("pixel data decodes to one constant value (0)")
    sr = build_report(source, refused, ALGO)
    got, sources = read_finding(sr)
    assert got == refused and got.present is None and sources == [source.SOPInstanceUID]
    assert ("272519000", "SCT") not in {(c.CodeValue, c.CodingSchemeDesignator) for c in _codes(sr)}
    assert "not analysed: pixel data decodes to one constant value (0)" in _texts(sr)
    with pytest.raises(ValueError):
        Finding(present=True, not_analysed="both")


def test_uids_are_the_same_on_every_run_and_differ_per_model(source):
    a = build_report(source, Finding(present=True, probability=0.9), ALGO)
    b = build_report(source, Finding(present=True, probability=0.9), ALGO)
    other = build_report(source, Finding(present=True, probability=0.9),
                         Algorithm(model="resnet18", artefact_sha256="cd" * 32, version="9.9.9"))
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    assert a.SOPInstanceUID != other.SOPInstanceUID
    assert all(len(u) <= 64 for u in (a.SOPInstanceUID, a.SeriesInstanceUID))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("finding", [Finding(present=True, probability=0.9, threshold=0.5, target_sensitivity=0.9),
                                     Finding.refused("cannot decode pixel data")])
def test_dciodvfy_finds_no_error(tmp_path, source, finding):
    path = write_report(tmp_path / "r.dcm", source, finding, ALGO)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = out.stdout + out.stderr
    assert "Comprehensive3DSR" in report
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report
    # Only the declared private coding scheme is unknown to it.
    assert all("99BONEDEPLOY" in line for line in report.splitlines() if line.startswith("Warning")), report


def _codes(sr):
    def walk(seq):
        for item in seq or ():
            for key in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
                yield from item.get(key) or ()
            yield from walk(item.get("ContentSequence"))
    return list(walk(sr.ContentSequence))


def _texts(sr):
    def walk(seq):
        for item in seq or ():
            if "TextValue" in item:
                yield str(item.TextValue)
            yield from walk(item.get("ContentSequence"))
    return list(walk(sr.ContentSequence))


def test_standard_codes_are_the_dictionarys():
    """Every standard code the report uses is in pydicom's DICOM content mapping resource with the
    meaning we write (SCT 125605004 is not in it: docs/pacs.md says how it was checked)."""
    import pydicom.sr._concepts_dict as cmr

    from bonedeploy.artefacts.dicom_sr import PRIVATE_SCHEME, _concepts

    for key, code in _concepts().items():
        if code.scheme_designator == PRIVATE_SCHEME or code.value == "125605004":
            continue
        meanings = [m for name, by_code in cmr.concepts[code.scheme_designator].items()
                    for value, (m, _cids) in by_code.items() if value == code.value]
        assert code.meaning in meanings, (key, code, meanings)


def _minimal_source():
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # a secondary capture with almost nothing in it
    ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = (generate_uid() for _ in range(3))
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.BitsAllocated, ds.PixelRepresentation = 1, 8, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Minimal^Person", "M1", "", ""
    ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = "", "", "20240101", ""
    ds.SpecificCharacterSet, ds.Modality = "ISO_IR 100", "OT"
    return ds


@pytest.mark.parametrize("finding", [
    Finding(present=True, probability=0.912345, threshold=0.3, target_sensitivity=0.95, ood_score=0.25),
    Finding(present=False, probability=1e-06, threshold=0.5),
    Finding(present=True, probability=0.5),
    Finding.refused("cannot decode pixel data (JPEG 2000: truncated)"),
    Finding.refused("out of distribution", ood_score=7.5),
])
@pytest.mark.parametrize("which", ["dx", "minimal"])
def test_fast_report_equals_highdicoms(source, finding, which):
    """build_report copies a prototype instead of running highdicom each time (~55 ms): the result
    must be highdicom's, element for element, dates and times aside."""
    from bonedeploy.artefacts.dicom_sr import build_with_highdicom

    src = source if which == "dx" else _minimal_source()
    for _ in range(2):  # the second from the cached prototype
        fast, slow = build_report(src, finding, ALGO), build_with_highdicom(src, finding, ALGO)
        assert _comparable(fast) == _comparable(slow)
        assert fast.file_meta.MediaStorageSOPInstanceUID == slow.SOPInstanceUID
    twin = copy.deepcopy(src)  # the same prototype, another instance: the first report must not leak
    twin.SOPInstanceUID, twin.PatientID = pydicom.uid.generate_uid(), "OTHER"
    again, slow_twin = build_report(twin, finding, ALGO), build_with_highdicom(twin, finding, ALGO)
    assert _comparable(again) == _comparable(slow_twin) and again.SOPInstanceUID != fast.SOPInstanceUID
    assert _comparable(fast) == _comparable(slow)


def _comparable(ds):
    """The dataset as nested lists of (tag, VR, value), without creation dates and times."""
    skip = {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "ContributionDateTime"}
    out = []
    for elem in ds:
        if elem.keyword in skip:
            continue
        if elem.VR == "SQ":
            out.append((elem.tag, "SQ", [_comparable(item) for item in elem.value]))
        else:
            out.append((elem.tag, elem.VR, str(elem.value)))
    return out


def _rich_source(source):
    """The DX source with what real modalities add: a UTF-8 character set and a non-ASCII name,
    acquisition equipment with a date and time, several software versions."""
    import datetime

    ds = copy.deepcopy(source)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Zoë"
    ds.InstitutionName, ds.StationName, ds.ManufacturerModelName = "Hôpital Test", "DX-2", "Model X"
    ds.SoftwareVersions = ["1.2", "3.4b"]
    ds.AcquisitionDate, ds.AcquisitionTime = datetime.date(2024, 5, 6), datetime.time(7, 8, 9)
    ds.PatientAge, ds.OtherPatientIDs = "042Y", "ALT1"  # patient module attributes the prototype lacks
    return ds


@pytest.mark.parametrize("finding", [
    Finding(present=True, probability=0.912345, threshold=0.3, target_sensitivity=0.95, ood_score=0.25),
    Finding(present=False, probability=1e-06, threshold=0.5),
    Finding.refused("cannot decode pixel data (JPEG 2000: truncated)"),
    Finding.refused("out of distribution", ood_score=7.5),
])
@pytest.mark.parametrize("which", ["dx", "minimal", "rich"])
def test_encoded_report_is_pydicoms_encoding_byte_for_byte(source, finding, which):
    """encode_report renders the prototype's encoding with holes instead of building and writing
    the dataset: its bytes must be exactly what pydicom writes for build_report, for every source
    (a twin after the first: the template is reused), and it must re-read as highdicom's report."""
    import io
    from datetime import datetime

    from bonedeploy.artefacts import dicom_sr_encode
    from bonedeploy.artefacts.dicom_sr import build_with_highdicom
    from bonedeploy.artefacts.dicom_sr_encode import encode_report

    src = {"dx": source, "minimal": _minimal_source(), "rich": _rich_source(source)}[which]
    twin = copy.deepcopy(src)
    twin.SOPInstanceUID, twin.PatientID, twin.StudyInstanceUID = (pydicom.uid.generate_uid(), "OTHER-ID-LONGER",
                                                                  pydicom.uid.generate_uid())
    now = datetime(2025, 1, 2, 3, 4, 5, 6789)
    for ds in (src, twin):
        fp = io.BytesIO()
        build_report(ds, finding, ALGO, now).save_as(fp, enforce_file_format=True)
        assert encode_report(ds, finding, ALGO, now) == fp.getvalue()
        back = pydicom.dcmread(io.BytesIO(encode_report(ds, finding, ALGO, now)))
        slow = io.BytesIO()
        build_with_highdicom(ds, finding, ALGO).save_as(slow, enforce_file_format=True)
        assert _comparable(back) == _comparable(pydicom.dcmread(io.BytesIO(slow.getvalue())))
        assert read_finding(back) == (finding, [ds.SOPInstanceUID])
    assert all(t is None or (t.checked and t.usable) for t in dicom_sr_encode._TEMPLATES.values())


def test_reports_from_sources_with_more_attributes_equal_highdicoms(source):
    """Acquisition equipment with a date and time, several software versions, a UTF-8 name, patient
    attributes the prototype lacks: build_report copies them as highdicom does."""
    from bonedeploy.artefacts.dicom_sr import build_with_highdicom

    rich = _rich_source(source)
    finding = Finding(present=True, probability=0.7, threshold=0.5)
    fast, slow = build_report(rich, finding, ALGO), build_with_highdicom(rich, finding, ALGO)
    assert _comparable(fast) == _comparable(slow)
    assert str(fast.PatientName) == "Müller^Zoë" and fast.PatientAge == "042Y"
    assert fast.ContributingEquipmentSequence[0].InstitutionName == "Hôpital Test"
