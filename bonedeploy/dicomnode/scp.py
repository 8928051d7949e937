"""The DICOM side of the node (pynetdicom): C-ECHO, and a C-STORE that is durable before it is
acknowledged.

Every storage SOP class is negotiated, in the transfer syntaxes a decoder here can read, so that an
instance of a class the node does not analyse gets a DIMSE refusal (0x0122) the sender logs, not
an association-level rejection it may retry forever. An accepted instance is spooled (fsync'd)
and recorded in the journal before the success status is returned; if either fails the sender
gets 0xA700 (out of resources) and keeps the instance. A resent instance (same SOP Instance UID)
is acknowledged again and never analysed twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from bonedeploy.dicomnode.config import ListenConfig
from bonedeploy.dicomnode.cpu import CpuLedger, thread_cpu
from bonedeploy.dicomnode.journal import Journal
from bonedeploy.dicomnode.spool import Spool, safe_uid

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122  # refused
OUT_OF_RESOURCES = 0xA700  # refused: the sender keeps the instance and may retry
CANNOT_UNDERSTAND = 0xC000  # an Affected SOP Instance UID that is not a UID

log = logging.getLogger("bonedeploy.listen")


def decodable_transfer_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixel data an installed decoder reads (uncompressed ones always),
    compressed ones first: pynetdicom accepts the first of these the sender proposes, and a sender
    that offers an instance in its own compressed syntax and an uncompressed one should not have
    to decompress it (DCMTK's storescu cannot, and then fails the store)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    out = []
    for ts in map(UID, ALL_TRANSFER_SYNTAXES):
        if not ts.is_compressed:
            out.append(ts)
            continue
        try:
            if get_decoder(ts).is_available:
                out.append(ts)
        except NotImplementedError:
            pass
    return sorted(out, key=lambda ts: not ts.is_compressed)  # stable: pynetdicom's order otherwise


class StoreHandler:
    """The C-STORE handler: refuse, or spool + journal, then acknowledge."""

    def __init__(self, config: ListenConfig, journal: Journal, spool: Spool, received: Callable[[], None],
                 ledger: CpuLedger | None = None):
        self.accepted = set(config.sop_classes)
        self.journal, self.spool, self.received = journal, spool, received
        self.ledger = ledger or CpuLedger()
        # association id -> [CPU s our handler took in its thread, its two threads' CPU when last read]
        self._threads: dict[int, list] = {}
        self._lock = threading.Lock()

    def __call__(self, event) -> int:
        cpu = time.thread_time()
        try:
            return self.store(event)
        finally:
            ours = time.thread_time() - cpu
            seen = _threads_cpu(event.assoc)  # kept: its DUL thread may be gone when it ends
            with self._lock:
                entry = self._threads.setdefault(id(event.assoc), [0.0, (0.0, 0.0)])
                entry[0] += ours
                entry[1] = seen

    def ended(self, event) -> None:
        """An association ended: what pynetdicom's two threads of it took, less our handler."""
        with self._lock:
            ours, seen = self._threads.pop(id(event.assoc), [0.0, (0.0, 0.0)])
        now = _threads_cpu(event.assoc)
        used = sum(max(a, b) for a, b in zip(now, seen))
        self.ledger.add("receive: pynetdicom (PDUs, C-STORE messages, its polling loops)", max(0.0, used - ours))

    def store(self, event) -> int:
        req = event.request
        sop_class, sop_uid = str(req.AffectedSOPClassUID), safe_uid(req.AffectedSOPInstanceUID)
        calling = event.assoc.requestor.ae_title
        if sop_class not in self.accepted:
            log.warning("refused SOP class %s (instance %s) from %s: not a radiograph class this node "
                        "accepts", sop_class, sop_uid, calling)
            return SOP_CLASS_NOT_SUPPORTED
        if sop_uid is None:
            log.warning("refused an instance from %s: its SOP Instance UID is not a UID", calling)
            return CANNOT_UNDERSTAND
        if self.journal.known(sop_uid):
            self.journal.count_duplicate(sop_uid)
            log.info("duplicate %s from %s: acknowledged, already journalled", sop_uid, calling)
            return SUCCESS
        try:
            with self.ledger.stage("receive: spool write + fsync"):
                path = self.spool.store(sop_uid, event.encoded_dataset())
            with self.ledger.stage("receive: journal commit"):
                added = self.journal.add(sop_uid, sop_class, calling, path)
        except Exception as e:  # disk full, journal locked: the sender must keep the instance
            log.error("could not spool %s from %s (%s: %s): refused with 0xA700", sop_uid, calling,
                      type(e).__name__, e)
            return OUT_OF_RESOURCES
        log.info("received %s from %s%s", sop_uid, calling, "" if added else " (duplicate)")
        self.received()
        return SUCCESS


def _threads_cpu(assoc) -> tuple[float, float]:
    """CPU s of an association's thread and of its DUL thread (0 where unreadable)."""
    dul = getattr(getattr(assoc, "dul", None), "native_id", None)
    return thread_cpu(assoc.native_id) or 0.0, (thread_cpu(dul) if dul else None) or 0.0


def start_scp(config: ListenConfig, handler: StoreHandler, ssl_context=None):
    """Start the server (non-blocking); returns it (``.server_address``, ``.shutdown()``)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG can dump datasets
    ae = AE(ae_title=config.ae_title)
    ae.require_called_aet = True
    if config.allow_ae:
        ae.require_calling_aet = list(config.allow_ae)
    ae.maximum_associations = config.max_associations
    syntaxes = decodable_transfer_syntaxes()
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    handlers = [(evt.EVT_C_STORE, handler), (evt.EVT_C_ECHO, lambda event: SUCCESS),
                (evt.EVT_REJECTED, _log_rejected), (evt.EVT_RELEASED, handler.ended),
                (evt.EVT_ABORTED, handler.ended)]
    return ae.start_server((config.host, config.port), block=False, evt_handlers=handlers,
                           ssl_context=ssl_context)


def _log_rejected(event) -> None:
    log.warning("association from %s (%s) rejected: calling or called AE title not allowed",
                event.assoc.requestor.ae_title, event.assoc.requestor.address)
