"""How fast is ``bonedeploy listen`` end to end, and what does durability cost?

Over N synthetic DX instances (``synth --format dicom``, full-size radiographs) and the fp32 ONNX of
the seed's AlexNet (random weights: speed does not depend on them), on this machine:

- node: Orthanc (the PACS, a temporary one on loopback) and ``bonedeploy listen --forward`` to
  it; ``--senders`` associations send the instances (pynetdicom SCU), and Orthanc's change feed
  is polled every 20 ms. Each sender sends its share on one association, as a modality sends a
  study. Throughput = N / (first C-STORE sent -> last SR stored in Orthanc);
  latency per instance = its SR stored in Orthanc - its C-STORE response (with a queue: every
  instance is sent at once). Then latency without a queue: one instance at a time; and the node
  without a destination (C-STORE in -> SR in the spool), as on an edge box whose PACS is elsewhere
  (here Orthanc shares the 2 cores).
- baseline: ``run_inference`` (in-process ``bonedeploy infer``) on the same files, model load
  excluded. Target: node >= 0.8 x baseline.
- fsync: what the spool's durable write and the journal's synchronous commit cost per instance,
  against the same writes without fsync.

Writes ``benchmarks/results/dicom_node-<machine>.{md,json}`` with the command, and the machine's
load average before and after (other work on a shared machine slows both sides alike only when
it is steady; the load is reported so that a reader can judge).

    python benchmarks/dicom_node.py                          # 96 instances
    python benchmarks/dicom_node.py --n 12 --no-write        # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "dicomnode"))  # the tests' Orthanc and node runners

RESULTS = HERE / "results"


def ensure_dicom(work: Path, n: int) -> list[Path]:
    from bonedeploy.data.synth import SynthConfig, generate_dataset

    root = work / f"dicom-n{n}"
    if not (root / "synth.json").is_file():
        print(f"generating {n} synthetic DX instances in {root} ...", flush=True)
        generate_dataset(root, SynthConfig(n=n, seed=0, image_format="dicom"), overwrite=root.exists())
    return sorted(root.rglob("*.dcm"))


def baseline(engine: Path, files: list[Path], out: Path, batch: int) -> float:
    from bonedeploy.infer.run import InferConfig, run_inference

    Path(str(out) + ".partial").unlink(missing_ok=True)
    r = run_inference(InferConfig(engine=engine, inputs=tuple(files), out=out, batch_size=batch))
    if r.errors:
        raise SystemExit(f"{len(r.errors)} images failed: {r.errors[:3]}")
    return r.images_per_s


def through_node(engine: Path, files: list[Path], work: Path, batch: int, senders: int) -> dict:
    import pydicom
    from dicomkit import Node, Orthanc

    datasets = [pydicom.dcmread(f) for f in files]
    shards = [datasets[k::senders] for k in range(senders)]
    acked: dict[str, float] = {}
    with Orthanc(work / "orthanc") as pacs, Node(engine, work / "spool", "--forward", pacs.address,
                                                 "--batch-size", str(batch)) as node:
        seen: dict[str, float] = {}
        done = threading.Event()
        last = pacs.get("/changes?last")["Last"]
        poller = threading.Thread(target=_poll, args=(pacs, last, len(files), seen, done))
        poller.start()
        t0 = time.perf_counter()

        threads = [threading.Thread(target=send_share, args=(node.port, s, acked)) for s in shards]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not done.wait(600):
            raise SystemExit(f"only {len(seen)} of {len(files)} SRs reached Orthanc in 600 s")
        t1 = max(seen.values())
        poller.join()
        sr_source = _sources(pacs, seen)
    latencies = [seen[sr] - acked[src] for sr, src in sr_source.items()]
    return {"instances_per_s": len(files) / (t1 - t0), "seconds": t1 - t0,
            "latency_s": {"p50": _pct(latencies, 50), "p99": _pct(latencies, 99), "max": max(latencies)},
            "senders": senders, "batch_size": batch}


def without_forwarding(engine: Path, files: list[Path], work: Path, batch: int) -> float:
    """Instances/s from the first C-STORE to the last SR written in the spool, no PACS: what the
    node itself costs, without a PACS sharing the CPU (as it does on loopback here)."""
    import pydicom
    from dicomkit import Node

    datasets = [pydicom.dcmread(f) for f in files]
    work.mkdir(parents=True, exist_ok=True)
    with Node(engine, work / "spool", "--batch-size", str(batch)) as node:
        t0 = time.perf_counter()
        senders = [threading.Thread(target=send_share, args=(node.port, datasets[k::2], {})) for k in range(2)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        while _reported(node.spool) < len(datasets):  # the journal, read in-process: no CLI starts
            time.sleep(0.05)
        return len(datasets) / (time.perf_counter() - t0)


def _reported(spool: Path) -> int:
    from bonedeploy.dicomnode.journal import Journal

    journal = Journal(spool, readonly=True)
    try:
        return journal.status()["states"]["reported"]
    finally:
        journal.close()


def one_at_a_time(engine: Path, files: list[Path], work: Path) -> dict:
    """Latency without a queue: each instance is sent when the previous one's SR has arrived
    (it includes the node's --max-wait for a batch to fill, 0.5 s by default)."""
    import pydicom
    from dicomkit import Node, Orthanc, send

    out = []
    with Orthanc(work / "orthanc") as pacs, Node(engine, work / "spool", "--forward", pacs.address) as node:
        for f in files:
            since = pacs.get("/changes?last")["Last"]
            if send(node.port, [pydicom.dcmread(f)]) != [0]:
                raise SystemExit(f"C-STORE of {f} failed")
            t_ack = time.perf_counter()
            deadline = time.monotonic() + 120
            while not any(c["ChangeType"] == "NewInstance" for c in pacs.get(f"/changes?since={since}")["Changes"]):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no SR for {f} in 120 s")
                time.sleep(0.01)
            out.append(time.perf_counter() - t_ack)
    return {"n": len(out), "p50": _pct(out, 50), "p99": _pct(out, 99), "max": max(out)}


def send_share(port: int, share: list, acked: dict) -> None:
    """One association per sender, as a modality sends a study; each response timed."""
    from pynetdicom import AE
    from pydicom.uid import ExplicitVRLittleEndian

    ae = AE(ae_title="BENCH")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(share[0].SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="BONEDEPLOY")
    if not assoc.is_established:
        raise SystemExit(f"no association with the node on port {port}")
    try:
        for ds in share:
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0:
                raise SystemExit(f"C-STORE of {ds.SOPInstanceUID} failed: {status}")
            acked[ds.SOPInstanceUID] = time.perf_counter()
    finally:
        assoc.release()


def _poll(pacs, since: int, n: int, seen: dict, done: threading.Event) -> None:
    """Orthanc's change feed: the time each new SR instance is first seen (20 ms resolution)."""
    deadline = time.monotonic() + 600
    while len(seen) < n and time.monotonic() < deadline:
        page = pacs.get(f"/changes?since={since}&limit=1000")
        now = time.perf_counter()
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
            journal.add(uid, "1.2.840.10008.5.1.4.1.1.1.1", "BENCH", spool.incoming_path(uid))
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


def main(argv=None) -> int:
    from infer_folder import SELECTED, ensure_onnx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=96, help="synthetic DX instances")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--senders", type=int, default=2, help="concurrent associations sending")
    ap.add_argument("--model", default=SELECTED, help="registry name exported when --onnx is not given")
    ap.add_argument("--onnx", type=Path, help="use this fp32 ONNX instead of exporting one")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--single-n", type=int, default=20, help="instances sent one at a time (latency without a queue)")
    ap.add_argument("--fsync-k", type=int, default=200, help="writes timed for the fsync cost")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "bonedeploy-dicom-bench")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only (smoke tests)")
    args = ap.parse_args(argv)

    import shutil

    from bonedeploy.util.machine import machine_info, machine_slug

    args.work_dir.mkdir(parents=True, exist_ok=True)
    files = ensure_dicom(args.work_dir, args.n)
    engine = args.onnx or ensure_onnx(args.work_dir, args.model)
    load_before = os.getloadavg()
    base, node = [], []
    for rep in range(args.repeats):
        base.append(baseline(engine, files, args.work_dir / "preds.csv", args.batch_size))
        run = args.work_dir / f"run{rep}"
        shutil.rmtree(run, ignore_errors=True)
        node.append(through_node(engine, files, run, args.batch_size, args.senders))
        print(f"repeat {rep + 1}/{args.repeats}: infer {base[-1]:.2f}/s, node {node[-1]['instances_per_s']:.2f}/s, "
              f"latency p50 {node[-1]['latency_s']['p50']:.2f} s p99 {node[-1]['latency_s']['p99']:.2f} s",
              flush=True)
    alone = []
    for rep in range(args.repeats):
        run = args.work_dir / f"alone{rep}"
        shutil.rmtree(run, ignore_errors=True)
        alone.append(without_forwarding(engine, files, run, args.batch_size))
    med_alone = statistics.median(alone)
    single_run = args.work_dir / "single"
    shutil.rmtree(single_run, ignore_errors=True)
    single = one_at_a_time(engine, files[:args.single_n], single_run)
    fs = fsync_cost(args.work_dir, files[0], args.fsync_k)
    load_after = os.getloadavg()
    med_base = statistics.median(base)
    med_node = statistics.median(r["instances_per_s"] for r in node)
    p50 = statistics.median(r["latency_s"]["p50"] for r in node)
    p99 = statistics.median(r["latency_s"]["p99"] for r in node)
    info = machine_info()
    command = "python benchmarks/dicom_node.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"benchmark": "dicom_node", "command": command.strip(), "instances": len(files),
              "model": str(args.onnx or args.model), "batch_size": args.batch_size, "senders": args.senders,
              "repeats": args.repeats, "infer_images_per_s": base, "node": node,
              "median": {"infer_images_per_s": med_base, "node_instances_per_s": med_node,
                         "ratio": med_node / med_base, "latency_p50_s": p50, "latency_p99_s": p99},
              "target_ratio": 0.8, "one_at_a_time_latency_s": single,
              "node_without_forwarding_instances_per_s": alone, "fsync": fs, "load_average_before": load_before,
              "load_average_after": load_after, "machine": info}
    d, n = fs["durable"], fs["no_fsync"]
    lines = [f"# dicom_node on {machine_slug(info)}", "", f"`{report['command']}`", "",
             f"{len(files)} synthetic DX instances ({fs['instance_bytes'] // 1024} KiB each), fp32 ONNX "
             f"{report['model']}, batch {args.batch_size}, {args.senders} sending associations, Orthanc "
             f"as the PACS on loopback; median of {args.repeats}.", "",
             "| measurement | value |", "|---|---:|",
             f"| in-process infer on the same files | {med_base:.2f} images/s |",
             f"| through the node (C-STORE in -> SR in Orthanc) | {med_node:.2f} instances/s |",
             f"| ratio (target >= 0.8) | {med_node / med_base:.3f} |",
             f"| through the node, no PACS (C-STORE in -> SR in the spool) | {med_alone:.2f} instances/s "
             f"({med_alone / med_base:.3f}x) |",
             f"| latency C-STORE response -> SR in Orthanc, all {len(files)} sent at once: p50 | {p50:.2f} s |",
             f"| the same, p99 | {p99:.2f} s |",
             f"| latency, one instance at a time ({single['n']}): p50 | {single['p50']:.2f} s |",
             f"| the same, p99 | {single['p99']:.2f} s |",
             f"| spool write, fsync'd / not | {d['spool_ms']:.2f} / {n['spool_ms']:.2f} ms |",
             f"| journal commit, synchronous=FULL / OFF | {d['journal_ms']:.2f} / {n['journal_ms']:.2f} ms |",
             f"| durability's cost per instance | {fs['fsync_ms']:.2f} ms |", "",
             f"CPU: {info['cpu']} ({info['cores']} logical cores). Load average (1, 5, 15 min) before "
             f"{', '.join(f'{v:.1f}' for v in load_before)}, after {', '.join(f'{v:.1f}' for v in load_after)}."]
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
