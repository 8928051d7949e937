"""A report's bytes without building its dataset: the prototype's encoding, with holes.

Building a report (``dicom_sr.build_report``: copy the prototype's ~280 elements, replace the
markers) and having pydicom write it cost ~12 ms of CPU, on a node whose CPU the model needs. A
report differs from its prototype only in the markers' values and in what it takes from its source
(patient and study modules, character set, acquisition equipment, dates). So each prototype is
encoded once, per character set, as a tree: constant bytes, holes where a marker is, and the
sequences and items around the holes, whose explicit lengths (pydicom writes them) are summed when a
report is rendered. The top-level elements a report takes from its source are encoded per report by
pydicom's own element writer.

The first report of each template is also built and written the slow way and the two encodings
compared: if they differ (another pydicom version writing otherwise), that template is dropped and
its reports are written by pydicom. tests/artefacts/test_sr_format.py compares them byte for byte.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.artefacts import dicom_sr as sr_mod

log = logging.getLogger(__name__)
ITEM = b"\xfe\xff\x00\xe0"
ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
UNDEFINED = 0xFFFFFFFF


@dataclass
class _Hole:
    elem: Any  # the prototype's element, its value a marker (or holding one)
    encodings: list


@dataclass
class _Node:
    """A sequence (``header``: tag, VR and reserved bytes) or an item (``header`` empty) holding
    a hole somewhere below it; ``undefined``: written with undefined length and a delimiter."""

    header: bytes
    undefined: bool
    parts: list = field(default_factory=list)  # bytes, _Hole or _Node (items of a sequence)
    is_sequence: bool = True


@dataclass
class _Template:
    preamble: bytes
    meta: Any  # the prototype's file meta (a FileMetaDataset)
    top: dict  # top-level tag -> bytes, _Hole or _Node
    checked: bool = False
    usable: bool = True


_TEMPLATES: dict = {}
_LOCK = threading.Lock()


def encode(source, finding, algorithm, now=None) -> bytes:
    from datetime import datetime

    now = now or datetime.now()
    proto = sr_mod._prototype(algorithm, str(source.SOPClassUID), sr_mod._shape(finding))
    template = _template(proto, _charset(source))
    if template is None or not template.usable:
        return _slow(source, finding, algorithm, now)
    data = _render_file(template, proto, source, finding, algorithm, now)
    if not template.checked:
        with _LOCK:
            if not template.checked:
                slow = _slow(source, finding, algorithm, now)
                template.usable, template.checked = data == slow, True
                if not template.usable:
                    log.warning("the report template differs from pydicom's encoding; writing reports "
                                "with pydicom (slower)")
                    return slow
    return data


def _slow(source, finding, algorithm, now) -> bytes:
    from pydicom.filebase import DicomBytesIO

    fp = DicomBytesIO()
    sr_mod.build_report(source, finding, algorithm, now).save_as(fp, enforce_file_format=True)
    return fp.getvalue()


def _charset(source):
    """The source's Specific Character Set (the report takes it), hashable; None: none."""
    value = source.get("SpecificCharacterSet")
    return value if value is None or isinstance(value, str) else tuple(value)


def _report_encodings(ds, charset) -> list[str]:
    """What pydicom encodes the report's text with: its character set, else the default."""
    from pydicom.charset import convert_encodings, default_encoding

    value = charset if charset is not None else ds.get("SpecificCharacterSet", default_encoding)
    return convert_encodings(list(value) if isinstance(value, tuple) else value)


def _template(proto, charset) -> _Template | None:
    key = (id(proto), charset)
    with _LOCK:
        if key not in _TEMPLATES:
            _TEMPLATES[key] = _compile(proto, charset)
        return _TEMPLATES[key]


def _compile(proto, charset) -> _Template | None:
    """The prototype's encoding as a tree (None where the fast path does not apply)."""
    from pydicom.uid import ExplicitVRLittleEndian

    ds = proto.dataset
    if ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        return None
    values, inside, _ = _marker_keys(proto)
    encodings = _report_encodings(ds, charset)
    top = {}
    for tag in ds.keys():
        if tag.element == 0 and tag.group > 6:  # group lengths: pydicom does not write them
            continue
        top[tag] = _compile_element(ds[tag], encodings, values, inside)
    preamble = getattr(ds, "preamble", None) or b"\x00" * 128
    return _Template(preamble=preamble, meta=ds.file_meta, top=top)


def _marker_keys(proto):
    """The prototype's markers, as ``_marker_values`` keys them (the values do not matter here)."""
    from pydicom.dataset import Dataset

    stand_in = Dataset()
    stand_in.update(sr_mod.STAND_IN)
    finding = sr_mod.Finding(present=None if proto.comment else True,
                             not_analysed="x" if proto.comment else None,
                             **{k: 0.5 for k in proto.finding_values})
    return sr_mod._marker_values(proto, stand_in, finding, sr_mod.Algorithm("m", "0" * 64, "0"))


def _compile_element(elem, encodings, values, inside):
    if elem.VR == "SQ":
        if not _has_marker(elem, values, inside):
            return _encode_element(elem, encodings)
        node = _Node(header=_tag(elem.tag) + b"SQ\x00\x00", undefined=elem.is_undefined_length)
        for item in elem.value:
            item_enc = _item_encodings(item, encodings)
            parts = [_compile_element(item[tag], item_enc, values, inside)
                     for tag in sorted(item.keys()) if not (tag.element == 0 and tag.group > 6)]
            node.parts.append(_Node(header=b"", is_sequence=False, parts=_merge(parts),
                                    undefined=getattr(item, "is_undefined_length_sequence_item", False)))
        return node
    if sr_mod._replacement(elem, values, inside) is not sr_mod._KEEP:
        return _Hole(elem, encodings)
    return _encode_element(elem, encodings)


def _has_marker(elem, values, inside) -> bool:
    if elem.VR != "SQ":
        return sr_mod._replacement(elem, values, inside) is not sr_mod._KEEP
    return any(_has_marker(e, values, inside) for item in elem.value for e in item)


def _item_encodings(item, encodings):
    from pydicom.charset import convert_encodings

    value = item.get("SpecificCharacterSet", encodings)
    return convert_encodings(value)


def _merge(parts: list) -> list:
    """Adjacent constant bytes joined: fewer pieces to render."""
    out: list = []
    for p in parts:
        if isinstance(p, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += p
        else:
            out.append(p)
    return out


def _tag(tag) -> bytes:
    return struct.pack("<HH", tag.group, tag.element)


def _encode_element(elem, encodings) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem, encodings)
    return fp.getvalue()


def _render(part, values, inside) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, _Hole):
        from pydicom.dataelem import DataElement

        value = sr_mod._replacement(part.elem, values, inside)
        return _encode_element(DataElement(part.elem.tag, part.elem.VR, value), part.encodings)
    body = b"".join(_render(p, values, inside) for p in part.parts)
    head = part.header if part.is_sequence else ITEM
    if part.undefined:
        return head + struct.pack("<I", UNDEFINED) + body + (SEQUENCE_END if part.is_sequence else ITEM_END)
    return head + struct.pack("<I", len(body)) + body


def _render_file(template: _Template, proto, source, finding, algorithm, now) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    values, inside, sop_uid = sr_mod._marker_values(proto, source, finding, algorithm)
    own = _from_source(proto, source, now)  # top-level elements taken from the source, and the dates
    encodings = _report_encodings(proto.dataset, _charset(source))
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(template.preamble + b"DICM")
    meta = sr_mod._clone(template.meta)
    meta.MediaStorageSOPInstanceUID = sop_uid
    write_file_meta_info(fp, meta, enforce_standard=True)
    for tag in sorted(set(template.top) | set(own.keys())):
        if tag in own:
            if not (tag.element == 0 and tag.group > 6):
                fp.write(_encode_element(own[tag], encodings))
        else:
            fp.write(_render(template.top[tag], values, inside))
    return fp.getvalue()


def _from_source(proto, source, now):
    """A dataset of the report's class holding only what ``_copy_from_source`` sets."""
    ds = proto.dataset
    own = ds.__class__.__new__(ds.__class__)
    own.__dict__.update(ds.__dict__)
    own._dict = {}
    own.ContributingEquipmentSequence = [sr_mod._clone(item) for item in ds.ContributingEquipmentSequence]
    sr_mod._copy_from_source(own, source, now)
    return own


def encode_report(source, finding, algorithm, now=None) -> bytes:
    """The report as a DICOM file, byte for byte what pydicom writes for ``dicom_sr.build_report``,
    without building it per report (benchmarks/dicom_node.py measures the saving)."""
    return encode(source, finding, algorithm, now)


def write_report(path: str | Path, source, finding, algorithm) -> Path:
    """Encode the report and write it atomically and durably (a reader never sees half a file;
    after a crash it is whole or absent)."""
    from bonedeploy.util.fs import atomic_path

    data = encode_report(source, finding, algorithm)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
