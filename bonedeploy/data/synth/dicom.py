"""Synthetic radiographs as DICOM DX instances (``bonedeploy synth --format dicom``).

Real DICOM without hospital data: made-up patients, studies of ``INSTANCES_PER_STUDY`` images
(one patient each), deterministic UIDs (the same config gives the same UIDs and bytes), 12-bit
MONOCHROME2 pixels with a window spanning them. Needs pydicom (the ``[dicom]`` extra).
"""

from __future__ import annotations

import io
from datetime import date, timedelta

import numpy as np

from bonedeploy.errors import BackendUnavailableError

INSTANCES_PER_STUDY = 3
BITS_STORED = 12
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
# Made-up names: unlike any real person's, and easy to search for in logs (none may appear there).
FAMILY = ("Synthetica", "Fakeworth", "Mockley", "Testington", "Samplesson", "Dummerly")
GIVEN = ("Ada", "Bram", "Cleo", "Dario", "Edda", "Fenn", "Gus", "Hedy")


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["bonedeploy-synth", str(seed), *map(str, parts)])


def patient_of(seed: int, study: int) -> dict[str, str]:
    """The made-up patient of study ``study``: name, ID, birth date, sex."""
    rng = np.random.default_rng([seed, 7, study])
    born = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 75)))
    return {"PatientName": f"{FAMILY[rng.integers(len(FAMILY))]}^{GIVEN[rng.integers(len(GIVEN))]}",
            "PatientID": f"SYN{seed:03d}{study:05d}", "PatientBirthDate": born.strftime("%Y%m%d"),
            "PatientSex": "MF"[int(rng.integers(2))]}


def encode_dicom(image: np.ndarray, seed: int, index: int) -> bytes:
    """float H x W in [0, 1] -> a DX (for presentation) Part 10 file, image ``index`` of ``seed``."""
    try:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    except ImportError as e:
        raise BackendUnavailableError("synth --format dicom needs pydicom: pip install 'bonedeploy[dicom]'") from e
    study, number = divmod(index, INSTANCES_PER_STUDY)
    ds = Dataset()
    ds.update(_patient_and_study(seed, study))
    sop_uid = _uid(seed, "image", index)
    ds.SOPClassUID, ds.SOPInstanceUID = DX_FOR_PRESENTATION, sop_uid
    ds.SeriesInstanceUID, ds.SeriesNumber = _uid(seed, "series", study), 1
    ds.InstanceNumber = number + 1
    ds.Modality, ds.PresentationIntentType = "DX", "FOR PRESENTATION"
    ds.SeriesDescription = "Elbow lateral (synthetic)"
    ds.Manufacturer = "bonedeploy synth"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined, ds.ImageLaterality, ds.ViewPosition = "ELBOW", "R" if index % 2 else "L", ""
    ds.PatientOrientation = ["A", "F"]
    ds.PositionerType = "NONE"
    ds.ViewCodeSequence = [_code("399067008", "SCT", "lateral")]
    ds.update(_pixels(image))
    ds.AnatomicRegionSequence = [_code("16953009", "SCT", "Elbow joint")]
    ds.AcquisitionContextSequence = []
    ds.DetectorType, ds.ImagerPixelSpacing = "DIRECT", [0.15, 0.15]
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX_FOR_PRESENTATION, sop_uid
    meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _patient_and_study(seed: int, study: int) -> dict:
    day = date(2024, 1, 1) + timedelta(days=study % 365)
    return {**patient_of(seed, study), "StudyInstanceUID": _uid(seed, "study", study),
            "StudyID": f"S{study:05d}", "AccessionNumber": f"ACC{seed:03d}{study:05d}",
            "StudyDate": day.strftime("%Y%m%d"), "StudyTime": "090000",
            "StudyDescription": "XR ELBOW (synthetic)", "ReferringPhysicianName": ""}


def _pixels(image: np.ndarray) -> dict:
    top = 2 ** BITS_STORED - 1
    arr = np.round(np.clip(image, 0.0, 1.0) * top).astype(np.uint16)
    return {"Rows": arr.shape[0], "Columns": arr.shape[1], "SamplesPerPixel": 1,
            "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16,
            "BitsStored": BITS_STORED, "HighBit": BITS_STORED - 1, "PixelRepresentation": 0,
            "PixelIntensityRelationship": "LIN", "PixelIntensityRelationshipSign": 1,
            "RescaleIntercept": 0, "RescaleSlope": 1, "RescaleType": "US",
            "WindowCenter": (top + 1) / 2, "WindowWidth": top + 1, "PresentationLUTShape": "IDENTITY",
            "PixelData": arr.tobytes()}


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
