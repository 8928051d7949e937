"""``run_node``: the whole node — SCP, analyser, forwarders — until SIGINT/SIGTERM.

Start-up resumes from the journal (nothing acknowledged is lost): received instances are
analysed, analysed ones reported, reported ones forwarded. The engine is loaded, checked and run
once before the port opens, so an instance is never acknowledged by a node that cannot analyse it,
and the first one does not wait for the runtime's first-run set-up. At the end the node writes
where its CPU went (``cpu.json`` in the spool, ``dicomnode.cpu``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from bonedeploy.dicomnode.config import ListenConfig
from bonedeploy.dicomnode.cpu import CpuLedger
from bonedeploy.dicomnode.journal import Journal
from bonedeploy.dicomnode.spool import Spool

log = logging.getLogger("bonedeploy.listen")


def setup_logging(path: Path) -> None:
    """One line per event, to the spool's log and stderr. Only SOP Instance UIDs and AE titles
    are logged, never a patient's name, ID or birth date."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    for handler in (logging.FileHandler(path), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        log.addHandler(handler)


def open_analysis(config: ListenConfig):
    """(backend, rule, algorithm): infer's engine, loaded and checked, with the card's rule."""
    from bonedeploy.backends.modelcache import artefact_sha256
    from bonedeploy.infer.dicom_sr import algorithm_of
    from bonedeploy.infer.run import InferConfig, decision_rule, open_engine

    infer_config = InferConfig(engine=Path(config.engine), inputs=(), backend=config.backend,
                               device=config.device, threshold=config.threshold, batch_size=config.batch_size)
    sha = artefact_sha256(config.engine)
    backend = open_engine(infer_config, sha)
    try:
        rule, algorithm = decision_rule(infer_config, backend), algorithm_of(backend, sha)
        warm_up(backend, rule, algorithm, config)
    except BaseException:
        backend.close()
        raise
    return backend, rule, algorithm


def warm_up(backend, rule, algorithm, config: ListenConfig) -> None:
    """What the first instance would otherwise wait for: the runtime's first run (it sets up its
    memory and kernels), and the report writer's first reports (imports, highdicom's prototypes
    for a present and an absent finding, their templates: ~0.7 s)."""
    from dataclasses import replace

    import numpy as np
    from pydicom.dataset import Dataset

    from bonedeploy.artefacts.dicom_sr import STAND_IN
    from bonedeploy.artefacts.dicom_sr_encode import encode_report
    from bonedeploy.infer.dicom_sr import finding_of

    shape = backend.card.preprocess.input_shape
    logits = backend.infer(np.zeros((config.batch_size, *shape), np.float32))
    probs = rule.probabilities(logits[:1])[0]
    score = 0.0 if getattr(backend, "gives_ood_score", False) else None
    finding = finding_of({"status": "ok", "probs": [float(p) for p in probs], "ood_score": score}, rule, backend.card)
    source = Dataset()
    source.update(STAND_IN)
    source.SOPClassUID, source.Modality = config.sop_classes[0], "DX"
    try:
        for present in (True, False):
            encode_report(source, replace(finding, present=present), algorithm)
    except Exception as e:  # only a head start: the first report will say what is wrong
        log.warning("report writer not warmed up (%s: %s)", type(e).__name__, e)


def ssl_context(config: ListenConfig):
    if config.tls is None:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*config.tls)
    return ctx


def run_node(config: ListenConfig, ready: Callable[[str], None] | None = None,
             stop: threading.Event | None = None) -> int:
    """Run until ``stop`` is set or SIGINT/SIGTERM; ``ready`` gets the address once listening."""
    from bonedeploy.data.decode import BatchPrefetcher
    from bonedeploy.dicomnode.analyse import Analyser
    from bonedeploy.dicomnode.forward import Forwarder
    from bonedeploy.dicomnode.scp import StoreHandler, start_scp

    config.validate()
    _import_dicom_stack()
    spool = Spool(config.spool)
    setup_logging(config.log_path)
    stop = stop or threading.Event()
    _on_signals(stop)
    journal = Journal(config.spool)
    clean_spool(spool, journal)
    backend, rule, algorithm = open_analysis(config)
    ledger = CpuLedger()
    try:
        with BatchPrefetcher() as prefetcher:
            forwarders = [Forwarder(d, config, journal, ledger) for d in config.forward]
            analyser = Analyser(journal, spool, backend, rule, algorithm, prefetcher,
                                [f.name for f in forwarders], config.batch_size, config.max_wait_s,
                                overlay=_overlay(config, backend, spool, algorithm),
                                on_reported=lambda: [f.wake.set() for f in forwarders], ledger=ledger)
            threads = [threading.Thread(target=w.run, args=(stop,), name=n, daemon=True)
                       for w, n in [(analyser, "analyser"), *[(f, f"forward {f.name}") for f in forwarders]]]
            for t in threads:
                t.start()
            ledger.start()
            server = start_scp(config, StoreHandler(config, journal, spool, analyser.wake.set, ledger),
                               ssl_context(config))
            host, port = server.server_address[:2]
            address = f"{config.ae_title}@{host}:{port}"
            log.info("listening as %s, spool %s, forwarding to %s", address, config.spool,
                     ", ".join(f.name for f in forwarders) or "nobody")
            if ready:
                ready(address)
            stop.wait()
            log.info("stopping")
            server.shutdown()
            analyser.wake.set()
            for f in forwarders:
                f.wake.set()
            for t in threads:
                t.join(timeout=30)
            log_cpu(ledger.write(config.spool))
            if analyser.overlay is not None:
                analyser.overlay.close()
    finally:
        backend.close()
        journal.close()
    return 0


def log_cpu(summary: dict) -> None:
    if not summary:
        return
    top = sorted(summary["stages"].items(), key=lambda kv: -kv[1]["cpu_s"])[:6]
    log.info("CPU over %.0f s: %.1f s, of which %s; unattributed %.1f s (cpu.json)", summary["seconds"],
             summary["process_cpu_s"], ", ".join(f"{k} {v['cpu_s']:.1f} s" for k, v in top),
             summary["unattributed_cpu_s"])


def _import_dicom_stack() -> None:
    """Import pydicom, pynetdicom and highdicom once, here, before any thread does: two threads
    importing them at once (the analyser resuming while the SCP starts) can see a half-initialised
    module ("cannot import name 'UID' from 'pydicom.uid'")."""
    from bonedeploy.artefacts.dicom_sr import INSTALL_HINT
    from bonedeploy.errors import BackendUnavailableError

    try:
        import highdicom  # noqa: F401
        import pydicom.pixels  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(f"bonedeploy listen needs pynetdicom and highdicom: {INSTALL_HINT}") from e


def _overlay(config: ListenConfig, backend, spool: Spool, algorithm):
    if not config.overlay:
        return None
    from bonedeploy.dicomnode.overlay import OverlayWriter

    return OverlayWriter(config.engine, backend, spool, algorithm)


def clean_spool(spool: Spool, journal: Journal) -> None:
    """What a crash left that was never acknowledged: half-written files, and received files whose
    journal row was never committed (the sender got no success and still has them)."""
    for d in (spool.incoming, spool.reports):
        for tmp in d.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    for path in spool.incoming.glob("*.dcm"):
        if not journal.known(path.name[:-len(".dcm")]):
            log.info("removing %s: spooled, never journalled, never acknowledged", path.name)
            path.unlink(missing_ok=True)


def _on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def node_status(spool: Path) -> dict:
    """The journal's counts per state and each destination's queue and last error."""
    from bonedeploy.errors import ConfigError

    if not (Path(spool) / "journal.sqlite").is_file():
        raise ConfigError(f"{spool}: no journal.sqlite here: not a bonedeploy listen spool")
    journal = Journal(Path(spool), readonly=True)
    try:
        return journal.status()
    finally:
        journal.close()
