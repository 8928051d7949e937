"""The analyser: journalled instances -> findings -> structured reports, in batches.

The analysis is ``bonedeploy infer``'s own: the same backend (``open_engine``), decoder and
preprocessing (``BatchPrefetcher``), post-processing (``predict_rows`` with the card's
``DecisionRule``) and row -> finding mapping (``infer.dicom_sr.finding_of``). Before that, the
node refuses what is not a radiograph it can read (``refusal``), and every refusal or decode
failure becomes a report saying "not analysed: <reason>"; an out-of-distribution gate adds its
reason the same way.

Instances wait at most ``max_wait_s`` for a batch to fill (a full batch goes at once). The next
batch decodes (in the decoder process) while the current one is run. A batch's findings are
journalled in one commit (``analysed``); the reporter thread then writes the reports of whatever
is analysed and journals them in another (``reported``), while the model runs the next batch: the
model never waits for reports. After a crash an analysed instance gets its report without being
analysed again. The reporter runs at a lower CPU priority, as the decoders do: on a small CPU it
fills the model's idle moments instead of slowing it down.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bonedeploy.artefacts.dicom_sr import Finding
from bonedeploy.artefacts.dicom_sr_encode import write_report
from bonedeploy.dicomnode.cpu import CpuLedger
from bonedeploy.dicomnode.journal import Journal
from bonedeploy.dicomnode.spool import Spool, sync_dir
from bonedeploy.infer.dicom_sr import finding_of, read_header
from bonedeploy.infer.run import batch_outputs, predict_rows

RADIOGRAPH_MODALITIES = ("CR", "DX", "OT", "RG")  # OT: secondary captures of radiographs
REPORTER_NICE = 10  # relative to the model's thread, as the decoders (data.decode.DECODER_NICE)
MAX_KEPT_HEADERS = 512  # headers handed to the reporter; beyond, it reads them back from the spool

log = logging.getLogger("bonedeploy.listen")


def refusal(ds) -> str | None:
    """Why an instance is not analysed although it was accepted, from its header; None: analyse."""
    if ds is None:
        return "the dataset cannot be read as DICOM"
    modality = str(ds.get("Modality", "") or "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return (f"modality {modality} is not a radiograph (analysed: {', '.join(RADIOGRAPH_MODALITIES)})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return f"a multi-frame instance ({frames} frames); the model reads single radiographs"
    return None


class Analyser:
    def __init__(self, journal: Journal, spool: Spool, backend, rule, algorithm, prefetcher,
                 destinations: list[str], batch_size: int, max_wait_s: float, overlay=None,
                 on_reported=lambda: None, ledger: CpuLedger | None = None):
        self.journal, self.spool, self.backend, self.rule = journal, spool, backend, rule
        self.algorithm, self.prefetcher, self.destinations = algorithm, prefetcher, destinations
        self.batch_size, self.max_wait_s, self.overlay = batch_size, max_wait_s, overlay
        self.on_reported = on_reported  # wakes the forwarders
        self.ledger = ledger or CpuLedger()
        self.wake = threading.Event()
        self.analysed = threading.Event()  # wakes the reporter
        self.headers: dict[str, Any] = {}  # uid -> header read by ``start``, for the reporter
        self.pending: deque = deque()  # batches started (decoding), oldest first
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="decode-ahead")  # waits on the pool

    def run(self, stop: threading.Event) -> None:
        reporter = threading.Thread(target=self.run_reporter, args=(stop,), name="reporter", daemon=True)
        reporter.start()
        try:
            while not stop.is_set():
                try:
                    if not self.step(stop):
                        self.wake.wait(1.0)
                        self.wake.clear()
                except Exception:  # a bug must not stop the node: logged, the instances stay queued
                    log.exception("analyser error; retrying in 5 s")
                    self.pending.clear()
                    stop.wait(5.0)
        finally:
            self.decoder.shutdown(wait=True, cancel_futures=True)
            self.analysed.set()
            reporter.join(timeout=60)

    def run_reporter(self, stop: threading.Event) -> None:
        """Report what is analysed (a batch just run, or what a restart found) until ``stop``."""
        _yield_cpu()
        while not stop.is_set():
            try:
                if not self.report_analysed():
                    self.analysed.wait(1.0)
                    self.analysed.clear()
            except Exception:  # a bug must not stop the node: logged, the instances stay analysed
                log.exception("reporter error; retrying in 5 s")
                stop.wait(5.0)

    def report_analysed(self) -> int:
        rows = self.journal.in_state("analysed", 4 * self.batch_size)
        if rows:
            self.report([(r["sop_uid"], Path(r["path"]), Finding.from_dict(json.loads(r["finding"])),
                          self.headers.pop(r["sop_uid"], None)) for r in rows])
        return len(rows)

    def step(self, stop: threading.Event | None = None) -> int:
        """Start decoding the next batch, and finish (infer, journal) the one decoded before it
        meanwhile; the reporter reports it. Returns the instances started."""
        rows = self.next_batch(stop, wait=not self.pending)
        if rows:
            self.pending.append(self.start(rows))
        if self.pending and (len(self.pending) > 1 or not rows):
            self.finish(*self.pending.popleft())
        return len(rows) or len(self.pending)

    def next_batch(self, stop: threading.Event | None, wait: bool) -> list:
        """Up to ``batch_size`` received instances not already in flight; waits up to ``max_wait_s``
        after the oldest arrived for the batch to fill (not while another batch is in flight)."""
        busy = {r["sop_uid"] for rows, *_ in self.pending for r in rows}

        def fetch():
            return [r for r in self.journal.in_state("received", self.batch_size + len(busy))
                    if r["sop_uid"] not in busy][:self.batch_size]

        rows = fetch()
        while rows and wait and len(rows) < self.batch_size and not (stop and stop.is_set()):
            left = self.max_wait_s - (time.time() - rows[0]["received_at"])
            if left <= 0:
                break
            self.wake.wait(left)  # set by each instance received
            self.wake.clear()
            rows = fetch()
        return rows

    def start(self, rows):
        """Read the headers, refuse what is not analysed, submit the rest for decoding."""
        with self.ledger.stage("analyse: read headers"):
            headers = {r["sop_uid"]: read_header(r["path"]) for r in rows}
        refused = {uid: Finding.refused(why) for uid, ds in headers.items() if (why := refusal(ds))}
        todo = [r for r in rows if r["sop_uid"] not in refused]
        paths = [Path(r["path"]) for r in todo]
        spec = self.backend.card.preprocess
        decoding = self.decoder.submit(lambda: next(iter(self.prefetcher.iterate([paths], spec)))) if todo else None
        return rows, headers, refused, [r["sop_uid"] for r in todo], paths, decoding, time.perf_counter()

    def finish(self, rows, headers, refused, uids, paths, decoding, t0) -> None:
        findings = dict(refused)
        t1 = time.perf_counter()
        with self.ledger.stage("analyse: wait for the decoder"):
            decoded = decoding.result() if decoding is not None else None
        t2 = time.perf_counter()
        if decoded is not None:
            findings.update(self.infer(uids, paths, decoded))
        if len(self.headers) < MAX_KEPT_HEADERS:
            self.headers.update(headers)
        with self.ledger.stage("analyse: journal commit"):
            self.journal.set_analysed({uid: f.to_dict() for uid, f in findings.items()})
        self.analysed.set()
        log.info("batch of %d: %.3f s since it started decoding; waited %.3f s for the decoder, model "
                 "%.3f s", len(rows), time.perf_counter() - t0, t2 - t1, time.perf_counter() - t2)

    def infer(self, uids: list[str], paths: list[Path], decoded) -> dict[str, Finding]:
        card = self.backend.card
        with self.ledger.stage("analyse: model (this thread's share)"):
            logits, scores = batch_outputs(self.backend, decoded)  # the card's OOD gate refuses as infer does
        with self.ledger.stage("analyse: findings"):
            rows = predict_rows(paths, decoded, logits, self.rule, scores, card.ood)
            findings = {uid: finding_of(row, self.rule, card) for uid, row in zip(uids, rows)}
        if self.overlay is not None:
            self.overlay.prepare(uids, decoded, findings, self.rule.positive_class)
        return findings

    def report(self, items: list[tuple[str, Path, Finding, Any]]) -> None:
        """Write the reports of (uid, path, finding, header or None) items, then journal them all
        in one commit (one fsync per batch, not per report) and wake the forwarders."""
        with self.ledger.stage("report: encode + write + fsync"):
            done = [(uid, self.write(uid, path, finding, header)) for uid, path, finding, header in items]
            sync_dir(self.spool.reports)
        with self.ledger.stage("report: journal commit"):
            self.journal.set_reported([(uid, files, self.destinations if files else []) for uid, files in done])
        self.on_reported()

    def write(self, uid: str, path: Path, finding: Finding, header: Any = None) -> list[str]:
        header = header if header is not None else read_header(path)
        if header is None:
            log.warning("%s: not analysed (%s); no report: its header has no study to file it in",
                        uid, finding.not_analysed)
            return []
        out = self.spool.report_path(uid)
        write_report(out, header, finding, self.algorithm)
        files = [str(out)]
        if self.overlay is not None:
            files.extend(self.overlay.write(uid, header, finding))
        what = (f"not analysed ({finding.not_analysed})" if finding.present is None
                else f"fracture {'present' if finding.present else 'absent'}")
        log.info("%s: %s, report %s", uid, what, out.name)
        return files


def _yield_cpu() -> None:
    """This thread yields the CPU to the model's (Linux: a thread's own nice value)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REPORTER_NICE)
    except (OSError, AttributeError):
        pass
