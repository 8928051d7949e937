"""How fast is ``bonedeploy listen`` end to end, where does its CPU go, and what does durability cost?

Over N synthetic DX instances (``synth --format dicom``, full-size radiographs) and the fp32 ONNX of
the seed's AlexNet (random weights: speed does not depend on them), on this machine:

- baseline: ``run_inference`` (in-process ``bonedeploy infer``) on the same files and batch size,
  model load excluded, and its first batch's extra cost (the runtime's first run, measured apart)
  taken out: the node warms its model up before it listens, so neither side counts a warm-up.
- node: Orthanc (the PACS, a temporary one on loopback) and ``bonedeploy listen --forward`` to
  it. ``--senders`` DCMTK ``storescu`` processes (a modality's C++ sender; pynetdicom with
  ``--sender pynetdicom``) send their shares, each on one association, as a modality sends a
  study. Throughput = N / (first C-STORE sent -> last SR stored in Orthanc), Orthanc's change feed
  polled every 20 ms; latency per instance = its SR in Orthanc - its journal commit (the C-STORE
  response follows it at once). Then the node without a destination (SR in the spool), and
  latency without a queue: one instance at a time.
- where the CPU goes, per instance: the node's own account by stage (``<spool>/cpu.json``,
  ``bonedeploy.dicomnode.cpu``), its decoder process, Orthanc and the senders (all on the same 2
  cores here), against infer's model process and decoder. Target: node >= 0.8 x baseline.
- fsync: what the spool's durable write and the journal's synchronous commit cost per instance,
  against the same writes without fsync.

Writes ``benchmarks/results/dicom_node-<machine>.{md,json}`` with the command and the machine's
load average before and after each pair of runs (other work on a shared machine slows both sides,
not always alike: the load is reported so that a reader can judge).

    python benchmarks/dicom_node.py                          # 300 instances, 2 repeats
    python benchmarks/dicom_node.py --n 12 --repeats 1 --single-n 2 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "dicomnode"))  # the tests' Orthanc and node runners

RESULTS = HERE / "results"
DX = "1.2.840.10008.5.1.4.1.1.1.1"


def ensure_dicom(work: Path, n: int) -> list[Path]:
    from bonedeploy.data.synth import SynthConfig, generate_dataset

    root = work / f"dicom-n{n}"
    if not (root / "synth.json").is_file():
        print(f"generating {n} synthetic DX instances in {root} ...", flush=True)
        generate_dataset(root, SynthConfig(n=n, seed=0, image_format="dicom"), overwrite=root.exists())
    return sorted(root.rglob("*.dcm"))


# ------------------------------------------------------------------ CPU of processes (Linux /proc)


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the decoder pool's fork server and workers), from each of its
    threads' ``children`` list: cheap enough to poll (a scan of /proc would be the poller's CPU)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


class ChildCpu:
    """CPU of the processes below ``pid`` over a ``with`` block, polled every 0.1 s (a decoder
    worker is gone by the time the block ends; it finishes decoding well before)."""

    def __init__(self, pid: int):
        self.pid, self.seen, self.first = pid, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while True:
            for p in descendants(self.pid):
                cpu = proc_cpu(p)
                self.first.setdefault(p, cpu)
                self.seen[p] = max(self.seen.get(p, 0.0), cpu)
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> "ChildCpu":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_s(self) -> float:
        return sum(self.seen[p] - self.first[p] for p in self.seen)


# ------------------------------------------------------------------ baseline: infer in-process


def first_run_cost(engine: Path, batch: int) -> float:
    """Seconds the runtime's first run of a batch takes over a later one (set-up): infer pays it
    in its clock, the node before it listens."""
    import numpy as np

    from bonedeploy.infer.run import InferConfig, open_engine

    backend = open_engine(InferConfig(engine=engine, inputs=(), batch_size=batch))
    try:
        x = np.zeros((batch, *backend.card.preprocess.input_shape), np.float32)
        times = []
        for _ in range(4):
            t = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - t)
    finally:
        backend.close()
    return max(0.0, times[0] - statistics.median(times[1:]))


def baseline(engine: Path, files: list[Path], out: Path, batch: int, warm_up_s: float) -> dict:
    from bonedeploy.infer.run import InferConfig, run_inference

    Path(str(out) + ".partial").unlink(missing_ok=True)
    cpu0 = _own_cpu()
    with ChildCpu(os.getpid()) as decoders:
        r = run_inference(InferConfig(engine=engine, inputs=tuple(files), out=out, batch_size=batch))
    if r.errors:
        raise SystemExit(f"{len(r.errors)} images failed: {r.errors[:3]}")
    return {"images_per_s": r.processed / max(1e-9, r.seconds - warm_up_s), "images_per_s_raw": r.images_per_s,
            "cpu_ms": {"model process (model, rows)": 1e3 * (_own_cpu() - cpu0) / r.processed,
                       "decode + preprocess (decoder process)": 1e3 * decoders.cpu_s / r.processed}}


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


# ------------------------------------------------------------------ the node


def send_all(port: int, files: list[Path], senders: int, sender: str) -> float:
    """Send each share on its own association, all at once; returns the senders' CPU seconds."""
    shares = [files[k::senders] for k in range(senders)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if sender == "storescu":
        procs = [subprocess.Popen(["storescu", "-aet", f"MODALITY{k}", "-aec", "BONEDEPLOY", "-to", "60", "-ta", "60",
                                   "-td", "120", "127.0.0.1", str(port), *map(str, share)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for k, share in enumerate(shares)]
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"storescu failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    cpu0 = time.thread_time()
    threads = [threading.Thread(target=_pynetdicom_share, args=(port, s)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.thread_time() - cpu0  # this thread only: pynetdicom's CPU is not counted


def _pynetdicom_share(port: int, share: list[Path]) -> None:
    import socket

    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="BENCH")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(DX, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="BONEDEPLOY")
    if not assoc.is_established:
        raise SystemExit(f"no association with the node on port {port}")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for path in share:  # by path: the file's bytes as they are, as a modality sends its own
            status = assoc.send_c_store(path)
            if not status or status.Status != 0:
                raise SystemExit(f"C-STORE of {path} failed: {status}")
    finally:
        assoc.release()


def through_node(engine: Path, files: list[Path], work: Path, batch: int, senders: int, sender: str,
                 forward: bool = True) -> dict:
    """One run: instances/s, latency per instance and the CPU of every process involved."""
    import contextlib

    from dicomkit import Node, Orthanc

    work.mkdir(parents=True, exist_ok=True)
    seen: dict[str, float] = {}
    with (Orthanc(work / "orthanc") if forward else contextlib.nullcontext()) as pacs:
        args = ("--forward", pacs.address) if forward else ()
        with Node(engine, work / "spool", *args, "--batch-size", str(batch)) as node:
            pids = {"node": node.proc.pid, "orthanc": pacs.proc.pid if forward else None}
            cpu0 = {k: proc_cpu(p) for k, p in pids.items() if p}
            with ChildCpu(node.proc.pid) as decoders:
                done = threading.Event()
                if forward:
                    poller = threading.Thread(target=_poll, args=(pacs, pacs.get("/changes?last")["Last"],
                                                                  len(files), seen, done))
                    poller.start()
                t0 = time.time()
                senders_cpu = send_all(node.port, files, senders, sender)
                if forward:
                    if not done.wait(900):
                        raise SystemExit(f"only {len(seen)} of {len(files)} SRs reached Orthanc in 900 s")
                    poller.join()
                    t1 = max(seen.values())
                else:
                    while _reported(node.spool) < len(files):  # the journal, read in-process
                        time.sleep(0.02)
                    t1 = time.time()
                cpu1 = {k: proc_cpu(p) for k, p in pids.items() if p}
        sr_source = _sources(pacs, seen) if forward else {}  # the node stopped: its account ends
    ledger = json.loads((work / "spool" / "cpu.json").read_text())
    received = _received_at(work / "spool")
    n = len(files)
    cpu_ms = {f"node: {k}": 1e3 * v["cpu_s"] / n for k, v in ledger["stages"].items()}
    cpu_ms["node: decode + preprocess (decoder process)"] = 1e3 * decoders.cpu_s / n
    cpu_ms["node: unattributed (logging, idle loops, GC)"] = 1e3 * ledger["unattributed_cpu_s"] / n
    if forward:
        cpu_ms["Orthanc (storing the reports)"] = 1e3 * (cpu1["orthanc"] - cpu0["orthanc"]) / n
    cpu_ms[f"senders ({sender})"] = 1e3 * senders_cpu / n
    out = {"instances_per_s": n / (t1 - t0), "seconds": t1 - t0, "senders": senders, "sender": sender,
           "batch_size": batch, "cpu_ms_per_instance": cpu_ms,
           "node_process_cpu_ms_per_instance": 1e3 * (cpu1["node"] - cpu0["node"]) / n, "node_ledger": ledger}
    if forward:
        latencies = [seen[sr] - received[src] for sr, src in sr_source.items()]
        out["latency_s"] = {"p50": _pct(latencies, 50), "p99": _pct(latencies, 99), "max": max(latencies)}
    return out


def _received_at(spool: Path) -> dict[str, float]:
    """{SOP Instance UID: when its journal row was committed}, read-only."""
    import sqlite3

    from bonedeploy.dicomnode.journal import FILENAME

    db = sqlite3.connect(f"file:{spool / FILENAME}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT sop_uid, received_at FROM instances").fetchall())
    finally:
        db.close()


def _reported(spool: Path) -> int:
    from bonedeploy.dicomnode.journal import Journal

    journal = Journal(spool, readonly=True)
    try:
        return journal.status()["states"]["reported"]
    finally:
        journal.close()


def one_at_a_time(engine: Path, files: list[Path], work: Path, sender: str) -> dict:
    """Latency without a queue: each instance is sent when the previous one's SR has arrived
    (it includes the node's --max-wait for a batch to fill, 0.5 s by default)."""
    from dicomkit import Node, Orthanc

    out = []
    with Orthanc(work / "orthanc") as pacs, Node(engine, work / "spool", "--forward", pacs.address) as node:
        for f in files:
            since = pacs.get("/changes?last")["Last"]
            send_all(node.port, [f], 1, sender)
            deadline = time.monotonic() + 120
            while not any(c["ChangeType"] == "NewInstance" for c in pacs.get(f"/changes?since={since}")["Changes"]):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no SR for {f} in 120 s")
                time.sleep(0.005)
            out.append(time.time())
        received = _received_at(node.spool)
    import pydicom

    lat = [t - received[pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID] for f, t in zip(files, out)]
    return {"n": len(lat), "p50": _pct(lat, 50), "p99": _pct(lat, 99), "max": max(lat)}


def _poll(pacs, since: int, n: int, seen: dict, done: threading.Event) -> None:
    """Orthanc's change feed: the time each new SR instance is first seen (20 ms resolution)."""
    deadline = time.monotonic() + 900
    while len(seen) < n and time.monotonic() < deadline:
        page = pacs.get(f"/changes?since={since}&limit=1000")
        now = time.time()
        for ch in page["Changes"]:
            if ch["ChangeType"] == "NewInstance":
                seen.setdefault(ch["ID"], now)
        since = page["Last"]
        time.sleep(0.02)
    if len(seen) >= n:
        done.set()


def _sources(pacs, seen: dict) -> dict[str, str]:
    """{Orthanc instance id of each SR: SOP Instance UID of its source}."""
    import io

    import pydicom

    from bonedeploy.artefacts.dicom_sr import read_finding

    return {oid: read_finding(pydicom.dcmread(io.BytesIO(pacs.instance_file(oid))))[1][0] for oid in seen}


def fsync_cost(work: Path, sample: Path, k: int) -> dict:
    """ms per instance of the spool write + journal commit, durable (fsync) and not."""
    from bonedeploy.dicomnode.journal import Journal
    from bonedeploy.dicomnode.spool import Spool

    data = sample.read_bytes()
    out = {}
    for durable in (True, False):
        root = work / f"fsync-{durable}"
        shutil.rmtree(root, ignore_errors=True)
        spool, journal = Spool(root), Journal(root)
        if not durable:
            journal._db.execute("PRAGMA synchronous=OFF")
        t_spool = t_journal = 0.0
        for i in range(k):
            uid = f"1.2.3.{i}"
            t = time.perf_counter()
            if durable:
                spool.store(uid, data)
            else:
                spool.incoming_path(uid).write_bytes(data)
            t_spool += time.perf_counter() - t
            t = time.perf_counter()
            journal.add(uid, DX, "BENCH", spool.incoming_path(uid))
            t_journal += time.perf_counter() - t
        journal.close()
        out["durable" if durable else "no_fsync"] = {"spool_ms": 1e3 * t_spool / k,
                                                     "journal_ms": 1e3 * t_journal / k}
    out["instance_bytes"] = len(data)
    out["fsync_ms"] = sum(out["durable"].values()) - sum(out["no_fsync"].values())
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


# ------------------------------------------------------------------ report


def cpu_table(base: list[dict], node: list[dict]) -> tuple[list[str], dict]:
    """Mean ms of CPU per instance, by stage, over the runs; and the totals."""
    def mean(rows, key):
        return statistics.mean(r["cpu_ms"][key] if "cpu_ms" in r else r["cpu_ms_per_instance"].get(key, 0.0)
                               for r in rows)

    infer_keys = list(base[0]["cpu_ms"])
    node_keys = sorted({k for r in node for k in r["cpu_ms_per_instance"]},
                       key=lambda k: (not k.startswith("node"), -mean(node, k)))
    infer_total = sum(mean(base, k) for k in infer_keys)
    node_total = sum(mean(node, k) for k in node_keys if k.startswith("node"))
    machine_total = sum(mean(node, k) for k in node_keys)
    lines = ["| where the CPU goes | ms of CPU per instance |", "|---|---:|"]
    lines += [f"| infer: {k} | {mean(base, k):.1f} |" for k in infer_keys]
    lines += [f"| **infer, total** | **{infer_total:.1f}** |"]
    lines += [f"| {k} | {mean(node, k):.1f} |" for k in node_keys if k.startswith("node")]
    lines += [f"| **node, total** | **{node_total:.1f}** |"]
    lines += [f"| {k} | {mean(node, k):.1f} |" for k in node_keys if not k.startswith("node")]
    lines += [f"| **node run, whole machine** | **{machine_total:.1f}** |"]
    totals = {"infer": infer_total, "node": node_total, "node_run_machine": machine_total,
              "cpu_bound_ratio": infer_total / machine_total}
    return lines, totals


def main(argv=None) -> int:
    from infer_folder import SELECTED, ensure_onnx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="synthetic DX instances (enough that start and end "
                    "costs are a small part)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--senders", type=int, default=2, help="concurrent associations sending")
    ap.add_argument("--sender", choices=("storescu", "pynetdicom"), default=None,
                    help="default: DCMTK storescu where installed, else pynetdicom")
    ap.add_argument("--model", default=SELECTED, help="registry name exported when --onnx is not given")
    ap.add_argument("--onnx", type=Path, help="use this fp32 ONNX instead of exporting one")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--single-n", type=int, default=20, help="instances sent one at a time (latency without a queue)")
    ap.add_argument("--fsync-k", type=int, default=200, help="writes timed for the fsync cost")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "bonedeploy-dicom-bench")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only (smoke tests)")
    args = ap.parse_args(argv)
    sender = args.sender or ("storescu" if shutil.which("storescu") else "pynetdicom")

    from bonedeploy.util.machine import machine_info, machine_slug

    args.work_dir.mkdir(parents=True, exist_ok=True)
    files = ensure_dicom(args.work_dir, args.n)
    engine = args.onnx or ensure_onnx(args.work_dir, args.model)
    warm_up_s = first_run_cost(engine, args.batch_size)
    loads, base, node, alone = [], [], [], []
    for rep in range(args.repeats):
        load0 = os.getloadavg()
        base.append(baseline(engine, files, args.work_dir / "preds.csv", args.batch_size, warm_up_s))
        run = args.work_dir / f"run{rep}"
        shutil.rmtree(run, ignore_errors=True)
        node.append(through_node(engine, files, run, args.batch_size, args.senders, sender))
        loads.append({"before": load0, "after": os.getloadavg()})
        r = node[-1]
        print(f"repeat {rep + 1}/{args.repeats}: infer {base[-1]['images_per_s']:.2f}/s, node {r['instances_per_s']:.2f}/s "
              f"({r['instances_per_s'] / base[-1]['images_per_s']:.2f}x), latency p50 {r['latency_s']['p50']:.2f} s "
              f"p99 {r['latency_s']['p99']:.2f} s; load {load0[0]:.1f} -> {loads[-1]['after'][0]:.1f}", flush=True)
    for rep in range(args.repeats):
        run = args.work_dir / f"alone{rep}"
        shutil.rmtree(run, ignore_errors=True)
        alone.append(through_node(engine, files, run, args.batch_size, args.senders, sender, forward=False))
    single_run = args.work_dir / "single"
    shutil.rmtree(single_run, ignore_errors=True)
    single = one_at_a_time(engine, files[:args.single_n], single_run, sender)
    fs = fsync_cost(args.work_dir, files[0], args.fsync_k)
    load_end = os.getloadavg()

    med_base = statistics.median(b["images_per_s"] for b in base)
    med_node = statistics.median(r["instances_per_s"] for r in node)
    ratios = [r["instances_per_s"] / b["images_per_s"] for r, b in zip(node, base)]
    med_alone = statistics.median(r["instances_per_s"] for r in alone)
    p50 = statistics.median(r["latency_s"]["p50"] for r in node)
    p99 = statistics.median(r["latency_s"]["p99"] for r in node)
    table, totals = cpu_table(base, node)
    info = machine_info()
    command = "python benchmarks/dicom_node.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"benchmark": "dicom_node", "command": command.strip(), "instances": len(files),
              "model": str(args.onnx or args.model), "batch_size": args.batch_size, "senders": args.senders,
              "sender": sender, "repeats": args.repeats, "infer_first_run_s": warm_up_s, "infer": base,
              "node": node, "node_without_forwarding": alone, "loads": loads, "load_average_end": load_end,
              "median": {"infer_images_per_s": med_base, "node_instances_per_s": med_node,
                         "ratio": statistics.median(ratios), "ratios": ratios, "latency_p50_s": p50,
                         "latency_p99_s": p99, "node_without_forwarding_instances_per_s": med_alone},
              "cpu_ms_per_instance": totals, "target_ratio": 0.8, "one_at_a_time_latency_s": single, "fsync": fs,
              "machine": info}
    d, nf = fs["durable"], fs["no_fsync"]
    load_text = "; ".join(f"{lo['before'][0]:.1f} -> {lo['after'][0]:.1f}" for lo in loads)
    lines = [f"# dicom_node on {machine_slug(info)}", "", f"`{report['command']}`", "",
             f"{len(files)} synthetic DX instances ({fs['instance_bytes'] // 1024} KiB each), fp32 ONNX "
             f"{report['model']}, batch {args.batch_size}, {args.senders} sending associations ({sender}), "
             f"Orthanc as the PACS on loopback; median of {args.repeats} (each a pair: infer, then the node).", "",
             "| measurement | value |", "|---|---:|",
             f"| in-process infer on the same files (its first run's {warm_up_s:.2f} s set-up excluded) | "
             f"{med_base:.2f} images/s |",
             f"| through the node (C-STORE in -> SR in Orthanc) | {med_node:.2f} instances/s |",
             f"| ratio (target >= 0.8), each pair | {statistics.median(ratios):.3f} "
             f"({', '.join(f'{x:.2f}' for x in ratios)}) |",
             f"| through the node, no PACS (C-STORE in -> SR in the spool) | {med_alone:.2f} instances/s "
             f"({med_alone / med_base:.3f}x) |",
             f"| latency journal commit (C-STORE response) -> SR in Orthanc, all {len(files)} sent at once: p50 "
             f"| {p50:.2f} s |",
             f"| the same, p99 | {p99:.2f} s |",
             f"| latency, one instance at a time ({single['n']}): p50 | {single['p50']:.2f} s |",
             f"| the same, p99 | {single['p99']:.2f} s |",
             f"| spool write, fsync'd / not | {d['spool_ms']:.2f} / {nf['spool_ms']:.2f} ms |",
             f"| journal commit, synchronous=FULL / OFF | {d['journal_ms']:.2f} / {nf['journal_ms']:.2f} ms |",
             f"| durability's cost per instance (wall) | {fs['fsync_ms']:.2f} ms |", "",
             "Where the CPU goes (mean over the repeats; the node's stages from its own account, "
             "`<spool>/cpu.json`):", "", *table, "",
             f"If both sides kept the 2 cores busy, the node would run at {totals['cpu_bound_ratio']:.2f}x infer "
             "(infer's CPU per image / the node run's CPU per instance, whole machine).", "",
             f"CPU: {info['cpu']} ({info['cores']} logical cores). Load average (1 min) before -> after each pair: "
             f"{load_text}; at the end {', '.join(f'{v:.1f}' for v in load_end)} (1, 5, 15 min)."]
    print("\n".join(lines))
    if not args.no_write:
        from bonedeploy.util.fs import write_json, write_text

        stem = args.results_dir / f"dicom_node-{machine_slug(info)}"
        write_json(stem.with_suffix(".json"), report)
        write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
        print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
