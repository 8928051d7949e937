"""The spool: received instances and written reports, each file durable before it is recorded.

``<spool>/incoming/<SOP Instance UID>.dcm`` as received (Part 10, the sender's transfer syntax);
``<spool>/reports/<SOP Instance UID>.sr.dcm`` (and ``.sc.dcm`` with ``--overlay``). A file is
written beside its final name, fsync'd, renamed, and its directory fsync'd: after a crash it is
either complete or absent, and the journal never names a file that is not there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_uid(uid: str) -> str | None:
    """The UID when it is one (it names files: never a path), else None."""
    uid = str(uid or "").strip().rstrip("\x00")
    return uid if len(uid) <= 64 and UID.match(uid) else None


class Spool:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.reports = self.root / "reports"
        for d in (self.root, self.incoming, self.reports):
            d.mkdir(parents=True, exist_ok=True)

    def incoming_path(self, sop_uid: str) -> Path:
        return self.incoming / f"{sop_uid}.dcm"

    def report_path(self, sop_uid: str, kind: str = "sr") -> Path:
        return self.reports / f"{sop_uid}.{kind}.dcm"

    def store(self, sop_uid: str, data: bytes) -> Path:
        path = self.incoming_path(sop_uid)
        write_durably(path, data)
        return path


def write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
