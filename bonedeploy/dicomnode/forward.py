"""Forwarding: each report to each ``--forward`` destination (C-STORE SCU), until it has it.

One thread per destination. A destination that cannot be reached is retried with exponential
backoff (``retry_base_s * 2^failures``, capped at ``retry_cap_s``), forever: nothing is dropped.
A report the destination refuses (a failure status) backs off on its own, so one bad report
does not hold up the others. Success and warning statuses count as delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from bonedeploy.dicomnode.config import Destination, ListenConfig
from bonedeploy.dicomnode.journal import Journal

log = logging.getLogger("bonedeploy.listen")
# What the node sends: its SRs and, with --overlay, Secondary Captures.
SENT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7")


def backoff(failures: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** max(0, failures - 1))


class Forwarder:
    def __init__(self, destination: Destination, config: ListenConfig, journal: Journal):
        self.dest, self.config, self.journal = destination, config, journal
        self.name = str(destination)
        self.wake = threading.Event()
        self.failures = 0  # consecutive association failures

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delay = self.step()
            except Exception:
                log.exception("forwarder %s error; retrying", self.name)
                delay = self.config.retry_cap_s
            self.wake.wait(delay)
            self.wake.clear()

    def step(self) -> float:
        """Send what is due; returns how long to wait before the next try."""
        due = self.journal.due(self.name, time.time())
        if not due:
            nxt = self.journal.next_due(self.name)
            return 1.0 if nxt is None else max(0.05, min(1.0, nxt - time.time()))
        assoc, error = self.associate()
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
            for row in due:
                if self.send(assoc, row):
                    sent.append(row["sop_uid"])
        finally:
            assoc.release()
            if sent:
                self.journal.delivered(sent, self.name)  # one commit for the lot
                log.info("forwarded %d reports to %s", len(sent), self.name)
        return 0.0

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
