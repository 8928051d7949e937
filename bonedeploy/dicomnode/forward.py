"""Forwarding: each report to each ``--forward`` destination (C-STORE SCU), until it has it.

One thread per destination. A destination that cannot be reached is retried with exponential
backoff (``retry_base_s * 2^failures``, capped at ``retry_cap_s``), forever: nothing is dropped.
A report the destination refuses (a failure status) backs off on its own, so one bad report
does not hold up the others. Success and warning statuses count as delivered.

An association stays open while reports are due and is released when none is: an idle one costs
pynetdicom's polling threads ~5% of a core, more than negotiating a new one per batch. Its socket
sends without delay (TCP_NODELAY): pynetdicom writes a C-STORE's command and dataset separately,
and with Nagle's algorithm the second write waits for the peer's delayed acknowledgement, ~40 ms
for every report (benchmarks/dicom_node.py).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from bonedeploy.dicomnode.config import Destination, ListenConfig
from bonedeploy.dicomnode.cpu import CpuLedger, thread_cpu
from bonedeploy.dicomnode.journal import Journal

log = logging.getLogger("bonedeploy.listen")
# What the node sends: its SRs and, with --overlay, Secondary Captures.
SENT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7")


def backoff(failures: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** max(0, failures - 1))


class Forwarder:
    def __init__(self, destination: Destination, config: ListenConfig, journal: Journal,
                 ledger: CpuLedger | None = None):
        self.dest, self.config, self.journal = destination, config, journal
        self.ledger = ledger or CpuLedger()
        self.name = str(destination)
        self.wake = threading.Event()
        self.failures = 0  # consecutive association failures
        self.assoc = None  # the open association, if any

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    delay = self.step()
                except Exception:
                    log.exception("forwarder %s error; retrying", self.name)
                    self.release()
                    delay = self.config.retry_cap_s
                self.wake.wait(delay)
                self.wake.clear()
        finally:
            self.release()

    def step(self) -> float:
        """Send what is due; returns how long to wait before the next try."""
        due = self.journal.due(self.name, time.time())
        if not due:
            self.release()
            nxt = self.journal.next_due(self.name)
            return 1.0 if nxt is None else max(0.05, min(1.0, nxt - time.time()))
        assoc, error = self.open()
        if assoc is None:
            self.failures += 1
            wait = backoff(self.failures, self.config.retry_base_s, self.config.retry_cap_s)
            for row in due:
                self.journal.failed(row["sop_uid"], self.name, error, time.time() + wait)
            log.warning("forward to %s failed (%s): %d reports wait, next try in %.0f s",
                        self.name, error, len(due), wait)
            return wait
        self.failures = 0
        sent = []
        try:
            with self.ledger.stage("forward: C-STORE (the forwarder's thread)"):
                for row in due:
                    if self.send(assoc, row):
                        sent.append(row["sop_uid"])
        finally:
            if not assoc.is_established:  # aborted by the peer, or broken: the next step reopens
                self.release()
            if sent:
                with self.ledger.stage("forward: journal commit"):
                    self.journal.delivered(sent, self.name)  # one commit for the lot
                log.info("forwarded %d reports to %s", len(sent), self.name)
        return 0.0

    def open(self):
        """(the open association or a new one, "") or (None, why not)."""
        if self.assoc is not None and self.assoc.is_established:
            return self.assoc, ""
        self.release()
        with self.ledger.stage("forward: associate + release"):
            self.assoc, error = self.associate()
        return self.assoc, error

    def release(self) -> None:
        """Release the association (abort it if it cannot be released), counting its thread's CPU."""
        assoc, self.assoc = self.assoc, None
        if assoc is None:
            return
        dul = getattr(getattr(assoc, "dul", None), "native_id", None)
        used = thread_cpu(dul) if dul is not None else None  # read while it still runs
        if used is not None:
            self.ledger.add("forward: pynetdicom's thread", used)
        with self.ledger.stage("forward: associate + release"):
            try:
                if assoc.is_established:
                    assoc.release()
                else:
                    assoc.abort()
            except Exception as e:  # a peer gone away: nothing more to do with it
                log.info("closing the association with %s: %s: %s", self.name, type(e).__name__, e)

    def associate(self):
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.connection_timeout = 10
        for sop_class in SENT_SOP_CLASSES:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        try:
            assoc = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title)
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"
        if assoc.is_established:
            no_delay(assoc)
            return assoc, ""
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        return None, f"association {why}"

    def send(self, assoc, row) -> bool:
        """C-STORE the report files of one instance; False (and a backoff) when one fails."""
        import json

        uid = row["sop_uid"]
        for path in json.loads(row["reports"] or "[]"):
            try:  # by path: pynetdicom sends the file's encoded dataset, no decode and re-encode
                status = assoc.send_c_store(Path(path))
                code = int(status.Status) if status else None
            except Exception as e:
                code, err = None, f"{type(e).__name__}: {e}"
            else:
                err = "no response" if code is None else f"status 0x{code:04X}"
            if code is None or not (code == 0 or (code >> 12) == 0xB):  # 0xBxxx: warnings
                wait = backoff(row["attempts"] + 1, self.config.retry_base_s, self.config.retry_cap_s)
                self.journal.failed(uid, self.name, f"C-STORE of {uid}'s report: {err}", time.time() + wait)
                log.warning("forward of %s's report to %s failed (%s); retry in %.0f s", uid, self.name, err, wait)
                return False
        return True


def no_delay(assoc) -> None:
    """TCP_NODELAY on the association's socket (see the module's docstring)."""
    import socket

    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a test double), or already closed: sends still work
            pass
