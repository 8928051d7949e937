"""What ``bonedeploy listen`` is told: its AE title and address, spool, destinations, policies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bonedeploy.errors import ConfigError
from bonedeploy.util.defaults import none_means_default

# The storage SOP classes that carry a radiograph; the others are refused by DIMSE status.
RADIOGRAPH_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 chars of the default repertoire, no backslash


def check_ae_title(title: str, what: str) -> str:
    if not AE_TITLE.match(title) or not title.strip():
        raise ConfigError(f"{what} {title!r}: an AE title is 1-16 printable ASCII characters, no backslash")
    return title.strip()


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP the reports are sent to: ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        m = re.match(r"^([^@]+)@(\[[^\]]+\]|[^:]+):(\d+)$", text.strip())
        if not m:
            raise ConfigError(f"--forward {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        port = int(m.group(3))
        if not 0 < port < 65536:
            raise ConfigError(f"--forward {text!r}: port {port} is not in 1-65535")
        return cls(check_ae_title(m.group(1), "--forward"), m.group(2).strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@none_means_default
@dataclass(frozen=True)
class ListenConfig:
    engine: Path
    spool: Path
    ae_title: str = "BONEDEPLOY"
    port: int = 11112
    host: str = "127.0.0.1"  # loopback unless told otherwise: DICOM has no authentication
    forward: tuple[Destination, ...] = ()
    allow_ae: tuple[str, ...] = ()  # empty: any calling AE title
    overlay: bool = False
    sop_classes: tuple[str, ...] = tuple(RADIOGRAPH_SOP_CLASSES)
    backend: str | None = None
    device: str | None = None
    threshold: float | None = None
    batch_size: int = 8
    max_wait_s: float = 0.5  # the longest an instance waits for others to batch with
    retry_base_s: float = 1.0  # forwarding backoff: base * 2^(failures - 1), capped
    retry_cap_s: float = 60.0
    max_associations: int = 10
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: DICOM over TLS
    log_file: Path | None = None  # default: <spool>/node.log

    def validate(self) -> None:
        check_ae_title(self.ae_title, "--ae-title")
        for aet in self.allow_ae:
            check_ae_title(aet, "--allow-ae")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port {self.port}: not in 0-65535 (0: any free port)")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0 <= self.max_wait_s <= 60:
            raise ConfigError(f"--max-wait must be in [0, 60] s, got {self.max_wait_s}")
        if self.retry_base_s <= 0 or self.retry_cap_s < self.retry_base_s:
            raise ConfigError(f"--retry-cap {self.retry_cap_s}: must be >= {self.retry_base_s} s")
        bad = [u for u in self.sop_classes if not re.match(r"^[0-9.]{1,64}$", u)]
        if bad:
            raise ConfigError(f"--accept-sop-class: not UIDs: {bad}")

    @property
    def log_path(self) -> Path:
        return self.log_file or self.spool / "node.log"
