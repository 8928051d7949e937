"""The AI result as a DICOM Structured Report (TID 1500 Measurement Report, Comprehensive 3D SR).

An on-disk format shared by ``bonedeploy infer --dicom-sr`` and ``bonedeploy listen``, so it sits
below both. Needs the ``[dicom]`` extra (pydicom, highdicom), imported inside the functions.

One measurement group per source image:
- qualitative evaluation: SCT 125605004 "Fracture of bone" = SCT 52101004 "Present" /
  SCT 272519000 "Absent" (CID 240), finding site SCT 16953009 "Elbow joint";
- measurements (UCUM "1"): DCM 122157 "Probability" (calibrated p(Fractured)), DCM 122411
  "Threshold Value" (the operating point), and private codes (scheme ``99BONEDEPLOY``) for the
  target sensitivity and the out-of-distribution score, which no standard code names;
- "not analysed: <reason>" (DCM 121106 "Comment") instead of the evaluation when the decoder or a
  gate refused the image;
- algorithm identification (name, bonedeploy version, artefact sha256 and model as parameters),
  the source image as evidence.
Patient and study modules are copied from the source (highdicom), so a PACS files the report in
the source's study, as a new series. UIDs are derived from the source SOP Instance UID and the
artefact's sha256: writing the report twice gives the same instance, never a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bonedeploy.errors import BackendUnavailableError

INSTALL_HINT = "pip install 'bonedeploy[dicom]'"
PRIVATE_SCHEME = "99BONEDEPLOY"
MANUFACTURER = "bonedeploy"
SERIES_NUMBER = 9901  # high, so the AI series sorts after the acquired ones in a viewer
SERIES_DESCRIPTION = "AI result: fracture finding (bonedeploy)"
NOT_ANALYSED = "not analysed: "


@dataclass(frozen=True)
class Algorithm:
    """Which model said it: goes into every report's algorithm identification."""

    model: str
    artefact_sha256: str
    version: str  # bonedeploy's
    name: str = "bonedeploy fracture classifier"

    def parameters(self) -> list[str]:
        return [f"model={self.model}", f"artefact_sha256={self.artefact_sha256}"]


@dataclass(frozen=True)
class Finding:
    """What the analysis concluded for one image. ``present`` None with ``not_analysed`` set: the
    image was refused (decoder, radiograph check, out-of-distribution gate) with that reason."""

    present: bool | None
    probability: float | None = None  # calibrated p(positive class)
    threshold: float | None = None
    target_sensitivity: float | None = None
    ood_score: float | None = None
    not_analysed: str | None = None

    def __post_init__(self) -> None:
        if (self.present is None) == (self.not_analysed is None):
            raise ValueError("a finding is either present/absent or not analysed (with a reason)")

    @classmethod
    def refused(cls, reason: str, ood_score: float | None = None) -> "Finding":
        return cls(present=None, not_analysed=" ".join(str(reason).split()), ood_score=ood_score)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def _import():
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError as e:
        raise BackendUnavailableError(f"DICOM structured reports need highdicom: {INSTALL_HINT}") from e
    return hd, codes


def _concepts():
    hd, codes = _import()
    c = hd.sr.CodedConcept
    return {
        # Not in pydicom's dictionary; checked against SNOMED International's concept (docs/pacs.md).
        "fracture": c("125605004", "SCT", "Fracture of bone"),
        "present": codes.SCT.Present, "absent": codes.SCT.Absent,  # CID 240
        "site": codes.SCT.ElbowJoint,
        "probability": codes.DCM.Probability, "threshold": codes.DCM.ThresholdValue,
        "target_sensitivity": c("TARGET-SENS", PRIVATE_SCHEME, "Target sensitivity of operating point"),
        "ood_score": c("OOD-SCORE", PRIVATE_SCHEME, "Out-of-distribution score"),
        "comment": codes.DCM.Comment, "unit": codes.UCUM.NoUnits,
        "procedure": codes.SCT.ImagingProcedure,
    }


def report_uids(source_sop_uid: str, study_uid: str, artefact_sha256: str) -> tuple[str, str]:
    """(series UID, SOP Instance UID) of the report: one series per study and model, one
    instance per source image and model, the same on every run (a resend replaces, never adds)."""
    from pydicom.uid import generate_uid

    series = generate_uid(entropy_srcs=["bonedeploy-sr-series", study_uid, artefact_sha256])
    sop = generate_uid(entropy_srcs=["bonedeploy-sr", source_sop_uid, artefact_sha256])
    return series, sop


def build_report(source, finding: Finding, algorithm: Algorithm, now=None):
    """A Comprehensive 3D SR about ``source`` (a pydicom Dataset; its pixels are not needed),
    created at ``now`` (a datetime; default: now).

    highdicom builds one prototype per model, source SOP class and kind of finding, about a
    stand-in source whose UIDs and values are unique markers; each report is a copy of it with the
    markers replaced and the source's patient, study and equipment copied in, as highdicom would.
    tests/artefacts/test_sr_format.py checks that the result equals highdicom's, element for
    element (dates and times aside). ``dicom_sr_encode.encode_report`` gives its encoding without building it."""
    proto = _prototype(algorithm, str(source.SOPClassUID), _shape(finding))
    sr = _clone(proto.dataset)
    values, inside, sop_uid = _marker_values(proto, source, finding, algorithm)
    _substitute(sr, values, inside)
    sr.file_meta.MediaStorageSOPInstanceUID = sop_uid
    _copy_from_source(sr, source, now)
    return sr


def _marker_values(proto, source, finding: Finding, algorithm: Algorithm) -> tuple[dict, dict, str]:
    """({marker: real value}, {marker found inside texts: real value}, the report's SOP Instance UID)."""
    series_uid, sop_uid = report_uids(source.SOPInstanceUID, source.StudyInstanceUID, algorithm.artefact_sha256)
    tracking = report_uids(source.SOPInstanceUID, "tracking", algorithm.artefact_sha256)[1]
    values = {STAND_IN["SOPInstanceUID"]: source.SOPInstanceUID, STAND_IN["SeriesInstanceUID"]: source.SeriesInstanceUID,
              STAND_IN["StudyInstanceUID"]: source.StudyInstanceUID, proto.sop_uid: sop_uid,
              proto.series_uid: series_uid, proto.tracking_uid: tracking}
    for k, marker in proto.finding_values.items():  # NUM items hold the value as DS and as FD
        values[_ds(marker)], values[float(marker)] = _ds(getattr(finding, k)), float(getattr(finding, k))
    if finding.not_analysed is not None:
        values[proto.comment] = (NOT_ANALYSED + finding.not_analysed)[:1024]
    return values, {STAND_IN["SOPInstanceUID"]: source.SOPInstanceUID}, sop_uid


def _copy_from_source(sr, source, now=None) -> None:
    """What a report takes from its source besides the markers' values, as highdicom would: the
    patient and study modules, the character set, the acquisition equipment; and its dates."""
    hd, _ = _import()
    _copy_patient_and_study(sr, source)
    if "SpecificCharacterSet" in source:
        sr.SpecificCharacterSet = source.SpecificCharacterSet
    _equipment(hd, sr, source)
    _now(sr, now)


STAND_IN = {"SOPInstanceUID": "1.2.3.4.5.6.7.8.9.1", "SeriesInstanceUID": "1.2.3.4.5.6.7.8.9.2",
            "StudyInstanceUID": "1.2.3.4.5.6.7.8.9.3"}
_PROTOTYPES: dict = {}


@dataclass(frozen=True)
class _Prototype:
    dataset: Any
    sop_uid: str
    series_uid: str
    tracking_uid: str
    finding_values: dict  # field -> the marker value it was built with
    comment: str | None


def _clone(ds):
    """A copy of a dataset in which every element (and item) is new, so that setting a value on
    the copy never touches the original; values themselves are shared, as they are only ever
    replaced, never changed in place. ~5 ms for a report, where copy.deepcopy takes ~40."""
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence

    new = ds.__class__.__new__(ds.__class__)
    new.__dict__.update(ds.__dict__)
    new._dict = {}
    for tag in ds.keys():
        elem = ds[tag]
        value = Sequence([_clone(item) for item in elem.value]) if elem.VR == "SQ" else elem.value
        new._dict[tag] = DataElement(elem.tag, elem.VR, value)
    if getattr(ds, "file_meta", None) is not None:
        new.file_meta = _clone(ds.file_meta)
    return new


def _shape(finding: Finding) -> tuple:
    fields = ("probability", "threshold", "target_sensitivity", "ood_score")
    return (finding.present, finding.not_analysed is not None,
            tuple(f for f in fields if getattr(finding, f) is not None))


def _prototype(algorithm: Algorithm, sop_class: str, shape: tuple) -> _Prototype:
    key = (algorithm, sop_class, shape)
    if key not in _PROTOTYPES:
        from pydicom.dataset import Dataset

        present, refused, fields = shape
        stand_in = Dataset()
        stand_in.SOPClassUID = sop_class
        stand_in.update(STAND_IN)
        stand_in.Rows = stand_in.Columns = 1
        stand_in.SamplesPerPixel, stand_in.BitsAllocated, stand_in.PixelRepresentation = 1, 16, 0
        stand_in.PhotometricInterpretation, stand_in.Modality = "MONOCHROME2", "OT"
        for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime"):  # what highdicom reads from its evidence: empty here
            setattr(stand_in, kw, "")
        markers = {f: 0.987654 - 0.111111 * i for i, f in enumerate(fields)}  # distinct, never real values
        comment = "bonedeploy-comment-marker" if refused else None
        finding = Finding(present=None if refused else present, not_analysed=comment, **markers)
        sr = build_with_highdicom(stand_in, finding, algorithm)
        series, sop = report_uids(STAND_IN["SOPInstanceUID"], STAND_IN["StudyInstanceUID"], algorithm.artefact_sha256)
        tracking = report_uids(STAND_IN["SOPInstanceUID"], "tracking", algorithm.artefact_sha256)[1]
        _PROTOTYPES[key] = _Prototype(sr, sop, series, tracking, markers,
                                      None if comment is None else NOT_ANALYSED + comment)
    return _PROTOTYPES[key]


def _ds(value) -> str:
    """A float as highdicom writes a NUM value (pydicom's auto-formatted DS)."""
    from pydicom.valuerep import DSfloat

    return str(DSfloat(float(value), auto_format=True))


def _substitute(ds, values: dict, inside: dict[str, str]) -> None:
    """Replace every value equal to a marker (strings and floats alike), and each marker within a
    text value."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _substitute(item, values, inside)
        else:
            new = _replacement(elem, values, inside)
            if new is not _KEEP:
                elem.value = new


_KEEP = object()


def _replacement(elem, values: dict, inside: dict[str, str]):
    """The value a marker-bearing element gets (``values`` and ``inside`` as ``_marker_values``
    gives them), or ``_KEEP``: one rule for ``build_report`` and the encoder's holes."""
    if elem.VR in ("FD", "FL") and not isinstance(elem.value, (list, bytes)):
        return values.get(float(elem.value), _KEEP)
    if isinstance(elem.value, str) or elem.VR in ("DS", "UI"):
        text = str(elem.value)
        if text in values:
            return values[text]
        if elem.VR in ("UT", "LT", "ST", "LO") and any(m in text for m in inside):
            for marker, real in inside.items():
                text = text.replace(marker, real)
            return text
    return _KEEP


_PATIENT_STUDY_TAGS: dict[str, list] = {}


def _copy_patient_and_study(sr, source) -> None:
    """``sr.copy_patient_and_study_information(source)``: which attributes it copies depends only
    on the source's SOP class, and finding them walks highdicom's module tables (~0.5 ms), so the
    list is asked once per SOP class, of a source that has none of them."""
    sop_class = str(source.SOPClassUID)
    if sop_class not in _PATIENT_STUDY_TAGS:
        asked = _Asked(sop_class)
        sr.copy_patient_and_study_information(asked)
        _PATIENT_STUDY_TAGS[sop_class] = asked.tags
    for tag in _PATIENT_STUDY_TAGS[sop_class]:
        if tag in source:
            sr.add(source[tag])


class _Asked:
    """A source that has no attribute and records which highdicom asked for, in order."""

    def __init__(self, sop_class: str):
        self.SOPClassUID, self.SOPInstanceUID, self.tags = sop_class, "1.2.3", []

    def __getitem__(self, tag):
        self.tags.append(tag)
        raise KeyError(tag)


def _equipment(hd, sr, source) -> None:
    """Contributing equipment as highdicom sets it: the source's acquisition equipment (when it
    names a manufacturer), then highdicom itself (kept from the prototype)."""
    items = [item for item in sr.ContributingEquipmentSequence
             if item.get("PurposeOfReferenceCodeSequence", [None])[0] is not None
             and item.PurposeOfReferenceCodeSequence[0].CodeValue != "109101"]
    acquisition = _acquisition_equipment(hd, source)
    if acquisition is not None:
        items.insert(0, acquisition)
    sr.ContributingEquipmentSequence = items


_IS_IMAGE: dict[str, bool] = {}


def _acquisition_equipment(hd, source):
    """``hd.ContributingEquipment.for_image_acquisition(source)``, or None where it refuses (no
    manufacturer, not an image). Its image check walks the whole IOD table on every call (~1.5 ms),
    so that answer is kept per SOP class and the rest of its (short) body is repeated here; the
    tests compare the reports with highdicom's own."""
    import datetime

    sop_class = str(source.SOPClassUID)
    if sop_class not in _IS_IMAGE:
        from pydicom.dataset import Dataset

        probe = Dataset()
        probe.SOPClassUID, probe.Manufacturer = sop_class, "probe"
        try:
            hd.ContributingEquipment.for_image_acquisition(probe)
            _IS_IMAGE[sop_class] = True
        except Exception:  # "Dataset does not represent an Image.", an unknown SOP class
            _IS_IMAGE[sop_class] = False
    manufacturer = source.get("Manufacturer")
    if not _IS_IMAGE[sop_class] or manufacturer is None or manufacturer == "":
        return None
    when = source.get("AcquisitionDateTime")
    if when is None:
        date, time = source.get("AcquisitionDate"), source.get("AcquisitionTime")
        if isinstance(date, datetime.date) and isinstance(time, datetime.time):
            when = datetime.datetime.combine(date, time)
    try:
        return _equipment_item(hd, source, manufacturer, when)
    except Exception:  # a value highdicom refuses: it leaves the item out too
        return None


def _equipment_item(hd, source, manufacturer, when):
    return hd.ContributingEquipment(
        manufacturer=manufacturer, purpose_of_reference=_import()[1].DCM.AcquisitionEquipment,
        manufacturer_model_name=source.get("ManufacturerModelName"),
        software_versions=source.get("SoftwareVersions"),
        device_serial_number=source.get("DeviceSerialNumber"),
        institution_name=source.get("InstitutionName"),
        institutional_department_name=source.get("InstitutionalDepartmentName"),
        institution_address=source.get("InstitutionAddress"), station_name=source.get("StationName"),
        contribution_datetime=when, contribution_description="Acquisition equipment of the source image(s)")


def _now(sr, now=None) -> None:
    from datetime import datetime

    from pydicom.valuerep import DA, DT, TM

    now = now or datetime.now()
    sr.InstanceCreationDate, sr.InstanceCreationTime = DA(now.date()), TM(now.time())
    sr.ContentDate, sr.ContentTime = DA(now.date()), TM(now.time())
    for item in sr.ContributingEquipmentSequence:
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(now)


def build_with_highdicom(source, finding: Finding, algorithm: Algorithm):
    """The report as highdicom builds it (~55 ms: it deep-copies and walks the whole tree)."""
    hd, codes = _import()
    k = _concepts()
    algo = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version,
                                         parameters=algorithm.parameters(), manufacturer=MANUFACTURER)
    series_uid, sop_uid = report_uids(source.SOPInstanceUID, source.StudyInstanceUID,
                                      algorithm.artefact_sha256)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=report_uids(source.SOPInstanceUID, "tracking", algorithm.artefact_sha256)[1],
            identifier=f"fracture finding {source.SOPInstanceUID}"),
        finding_type=k["fracture"], algorithm_id=algo,
        finding_sites=[hd.sr.FindingSite(anatomic_location=k["site"])],
        measurements=_measurements(hd, k, finding) or None,
        qualitative_evaluations=None if finding.present is None else [hd.sr.QualitativeEvaluation(
            k["fracture"], k["present"] if finding.present else k["absent"])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    if finding.not_analysed is not None:
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=k["comment"], value=(NOT_ANALYSED + finding.not_analysed)[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=report_uids("device", "device", algorithm.artefact_sha256)[1], name=algorithm.name,
            manufacturer_name=MANUFACTURER, model_name=algorithm.model))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=k["procedure"], imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=series_uid,
        series_number=SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION)
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme():
    """Declares the local coding scheme, as PS3.3 C.12.1.1.2 asks of a private designator."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "bonedeploy local codes"
    item.CodingSchemeResponsibleOrganization = "bonedeploy project"
    return item


def _measurements(hd, k, finding: Finding) -> list:
    values = [("probability", finding.probability), ("threshold", finding.threshold),
              ("target_sensitivity", finding.target_sensitivity), ("ood_score", finding.ood_score)]
    return [hd.sr.Measurement(name=k[name], value=float(v), unit=k["unit"])
            for name, v in values if v is not None]


def read_finding(sr) -> tuple[Finding, list[str]]:
    """(the finding, the SOP Instance UIDs of its source images) from a report this module wrote
    (a pydicom Dataset or a path): how tests, docs and users read one back."""
    import pydicom

    if not isinstance(sr, pydicom.Dataset):
        sr = pydicom.dcmread(sr)
    k = _concepts()
    found: dict[str, Any] = {}
    sources: list[str] = []
    for item in _walk(sr.ContentSequence):
        name = _code(item.get("ConceptNameCodeSequence"))
        if item.ValueType == "CODE" and name == _key(k["fracture"]):
            found["present"] = _code(item.ConceptCodeSequence) == _key(k["present"])
        elif item.ValueType == "NUM":
            for field in ("probability", "threshold", "target_sensitivity", "ood_score"):
                if name == _key(k[field]):
                    found[field] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT" and name == _key(k["comment"]):
            if item.TextValue.startswith(NOT_ANALYSED):
                found["not_analysed"] = item.TextValue[len(NOT_ANALYSED):]
        elif item.ValueType == "IMAGE":
            sources.append(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    found.setdefault("present", None)
    return Finding(**found), sources


def _walk(seq):
    for item in seq or ():
        yield item
        yield from _walk(item.get("ContentSequence"))


def _code(seq) -> tuple[str, str] | None:
    return (seq[0].CodeValue, seq[0].CodingSchemeDesignator) if seq else None


def _key(code) -> tuple[str, str]:
    return (code.value, code.scheme_designator)
