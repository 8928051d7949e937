"""``bonedeploy serve`` versus the best in-process runtime: same artefact, same machine, one run.

    python benchmarks/serve.py --onnx RUN/model.int8.onnx [--concurrency 1,4,8,16] [--duration 8]
                               [--max-batch 8] [--shm] [--serve-arg=--instances=1 ...] [--pytriton]

The server runs the runtime ``serve`` chooses (``bench --select``'s record beside the file, as
``infer``), and the benchmark prints which and why. Baseline: every runtime that can run the file,
in process, at batch 1 and batch 8 (a preprocessed tensor in memory), measured before and after the
server; the best batch-8 throughput of all of them is the reference. Load: ``c`` closed-loop
gRPC clients (threads of this process, tritonclient) each sending one preprocessed 1 x C x H x W
tensor per request; with ``--shm`` a second row whose clients pass the tensor through system shared
memory (same host) instead of the socket. For each level: images/s, latency, the mean batch Triton
formed (its statistics), and where the CPU time went (client, tritonserver, each model's stubs).

Targets: concurrency 8 >= 0.9x the best in-process batch-8 throughput (issue 23); p50 at
concurrency 1 <= in-process batch-1 p50 of the served runtime + 10 ms (issue 11).
Results: benchmarks/results/serve-<machine>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bonedeploy.backends import open_backend  # noqa: E402
from bonedeploy.backends.select import candidates, resolve  # noqa: E402
from bonedeploy.bench.timing import measure  # noqa: E402
from bonedeploy.errors import BonedeployError  # noqa: E402
from bonedeploy.serve.loadgen import closed_loop, parse_concurrency, server_batch_counts  # noqa: E402
from bonedeploy.serve.process import ServerProcess, free_ports  # noqa: E402

TARGET_RATIO = 0.9
TARGET_C1_MS = 10.0


# --- in process -----------------------------------------------------------------------------------

def in_process(artefact: Path, duration: float) -> dict[str, dict]:
    """Each runtime that can run the file, as ``infer`` would open it (the record's options for the
    recorded one), at batch 1 and 8."""
    choice = resolve(artefact, None)
    out: dict[str, dict] = {}
    for name in candidates(artefact) or (choice.backend,):
        opts = choice.options if name == choice.backend else {}
        try:
            with open_backend(artefact, name, **opts) as b:
                x = np.random.default_rng(0).random((8, *b.card.preprocess.input_shape), dtype=np.float32)
                row = {}
                for bs in (1, 8):
                    s = measure(lambda: b.infer(x[:bs]), bs, warmup_s=0.5, duration_s=duration, min_iterations=10)
                    row[str(bs)] = s.to_dict()
                    print(f"in-process {name} batch {bs}: p50 {s.p50_ms:.1f} ms, {s.images_per_s:.1f} img/s", flush=True)
                out[name] = row
        except BonedeployError as e:
            print(f"in-process {name}: not measured ({e})", flush=True)
    return out


def best_b8(*runs: dict[str, dict]) -> tuple[str, float]:
    """The highest batch-8 throughput of any runtime in any of the runs (the strictest reference)."""
    return max(((name, row["8"]["images_per_s"]) for run in runs for name, row in run.items()),
               key=lambda t: t[1])


# --- CPU accounting ---------------------------------------------------------------------------------

def _procs() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent, name, CPU ticks) for every process."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        rp = st.rfind(")")
        f = st[rp + 2:].split()
        out[int(p)] = (int(f[1]), st[st.find("(") + 1:rp], int(f[11]) + int(f[12]))
    return out


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of ``root``'s descendants, by name (a model's stubs are told apart by the
    model they serve, from their command line)."""
    procs, hz = _procs(), os.sysconf("SC_CLK_TCK")
    found, stack = {}, [root]
    while stack:
        q = stack.pop()
        for p, (parent, name, ticks) in procs.items():
            if parent == q:
                stack.append(p)
                if name.startswith("triton_python"):
                    name = "stubs " + _stub_model(p)
                found[name] = found.get(name, 0.0) + ticks / hz
    return found


def _stub_model(pid: int) -> str:
    try:
        args = open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return "?"
    model = next((a for a in args if a.endswith("model.py")), "")
    return Path(model).parent.parent.name or "?"


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- load ---------------------------------------------------------------------------------------------

def make_workers(host: str, model: str, shape, protocol: str, shm: bool):
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    rng = np.random.default_rng(1)
    regions: list = []

    def make_worker(k: int):
        client = tc.InferenceServerClient(host)
        x = rng.random((1, *shape), dtype=np.float32)
        inp = tc.InferInput("image", list(x.shape), "FP32")
        out = [tc.InferRequestedOutput("logits")]
        if not shm:
            inp.set_data_from_numpy(x)
            return lambda: client.infer(model, [inp], outputs=out)
        import tritonclient.utils.shared_memory as shmlib

        name = f"bd_bench_{os.getpid()}_{len(regions)}"
        handle = shmlib.create_shared_memory_region(name, "/" + name, x.nbytes)
        regions.append((client, name, handle))
        client.register_system_shared_memory(name, "/" + name, x.nbytes)
        inp.set_shared_memory(name, x.nbytes)

        def call():
            shmlib.set_shared_memory_region(handle, [x])  # a client writes each new image once
            return client.infer(model, [inp], outputs=out)
        return call

    def release() -> None:
        import tritonclient.utils.shared_memory as shmlib

        for client, name, handle in regions:
            try:
                client.unregister_system_shared_memory(name)
            finally:
                shmlib.destroy_shared_memory_region(handle)
        regions.clear()

    return make_worker, release, tc.InferenceServerClient(host)


def load_levels(label: str, server_pid: int, host: str, model: str, shape, levels, duration: float,
                protocol: str, shm: bool = False) -> list[dict]:
    make_worker, release, stats_client = make_workers(host, model, shape, protocol, shm)
    rows = []
    try:
        for c in levels:
            closed_loop(make_worker, c, 1.0, warmup_s=0.0)  # warm this level's connections
            release()
            before = server_batch_counts(stats_client, model)
            cpu0, me0 = tree_cpu(server_pid), self_cpu()
            r = closed_loop(make_worker, c, duration, warmup_s=1.0)
            cpu1, me1 = tree_cpu(server_pid), self_cpu()
            after = server_batch_counts(stats_client, model)
            release()
            if before and after and after[1] > before[1]:
                r.mean_server_batch = (after[0] - before[0]) / (after[1] - before[1])
            d = r.to_dict()
            n = max(1, r.requests)
            # Over warm-up + measured window (both under the same load): CPU ms per answered image.
            d["cpu_ms_per_image"] = {k: 1000 * (cpu1[k] - cpu0.get(k, 0.0)) / n for k in sorted(cpu1)}
            d["cpu_ms_per_image"]["client (benchmark)"] = 1000 * (me1 - me0) / n
            s = r.stats
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in d["cpu_ms_per_image"].items() if v >= 0.05)
            print(f"{label} concurrency {c}: {s.images_per_s:.1f} img/s, p50 {s.p50_ms:.1f} ms, "
                  f"p99 {s.p99_ms:.1f} ms, mean batch {r.mean_server_batch or float('nan'):.2f}, "
                  f"errors {r.errors}; CPU ms/img: {cpu}", flush=True)
            rows.append(d)
    finally:
        release()
    return rows


def served_runtime(output: list[str]) -> str:
    """The banner's runtime line: which runtime ``serve`` chose and why."""
    return next((ln.strip()[len("runtime"):].strip() for ln in output if ln.strip().startswith("runtime ")), "?")


# --- the alternative design: PyTriton's binding (its proxy process is one hop more) --------------

def pytriton_server(onnx: Path, ports: list[int], max_batch: int, delay_us: int) -> None:
    os.environ["LD_LIBRARY_PATH"] = sysconfig.get_config_var("LIBDIR") + ":" + os.environ.get("LD_LIBRARY_PATH", "")
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    backend = open_backend(onnx).load()
    k = len(backend.card.classes)

    @batch
    def infer(image):
        return {"logits": backend.infer(image)}

    cfg = TritonConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], http_address="127.0.0.1",
                       grpc_address="127.0.0.1")
    with Triton(config=cfg) as t:
        t.bind(model_name="bonedeploy", infer_func=infer,
               inputs=[Tensor(name="image", dtype=np.float32, shape=backend.card.preprocess.input_shape)],
               outputs=[Tensor(name="logits", dtype=np.float32, shape=(k,))],
               config=ModelConfig(max_batch_size=max_batch,
                                  batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)))
        print("ready;", flush=True)
        t.serve()


def run_pytriton(onnx: Path, shape, levels, duration: float, protocol: str, max_batch: int) -> list:
    import urllib.request

    ports = free_ports(3)
    cmd = [sys.executable, __file__, "--onnx", str(onnx), "--_pytriton-serve", ",".join(map(str, ports)),
           "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/models/bonedeploy/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("PyTriton did not become ready")
        host = f"127.0.0.1:{ports[1] if protocol == 'grpc' else ports[0]}"
        return load_levels("pytriton", proc.pid, host, "bonedeploy", shape, levels, duration, protocol)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


# --- report -------------------------------------------------------------------------------------------

def targets(res: dict) -> list[dict]:
    ref_name, ref = res["reference"]["runtime"], res["reference"]["images_per_s"]
    served = res["served_backend"]
    b1 = [run[served]["1"]["p50_ms"] for run in (res["in_process_before"], res["in_process_after"]) if served in run]
    out = []
    for label, rows in res["servers"].items():
        by_c = {r["concurrency"]: r["stats"] for r in rows if r["stats"]}
        if 8 in by_c:
            ratio = by_c[8]["images_per_s"] / ref
            out.append({"target": f"{label}: concurrency 8 / best in-process batch 8 ({ref_name})",
                        "goal": f">= {TARGET_RATIO}", "measured": round(ratio, 3),
                        "verdict": "PASS" if ratio >= TARGET_RATIO else "FAIL"})
        if 1 in by_c and b1:
            d = by_c[1]["p50_ms"] - min(b1)
            out.append({"target": f"{label}: p50 at concurrency 1 - in-process batch-1 p50 ({served})",
                        "goal": f"<= +{TARGET_C1_MS:g} ms", "measured": round(d, 1),
                        "verdict": "PASS" if d <= TARGET_C1_MS else "FAIL"})
    return out


def render(res: dict) -> str:
    ref = res["reference"]
    lines = [f"# bonedeploy serve vs in-process: {Path(res['artefact']).name} on {res['machine']}", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {res['cpu']}, {res['cores']} cores; load average {res['load_before']} before, "
             f"{res['load_after']} after (other processes share these cores: ratios are from one run).", "",
             f"Served runtime: **{res['served_runtime']}**; `serve` options: `{' '.join(res['serve_args'])}`.", "",
             "In process (compute only, preprocessed tensor in memory; before / after the server):", "",
             "| runtime | batch 1 p50 ms | batch 1 img/s | batch 8 img/s |", "|---|---:|---:|---:|"]
    for when in ("in_process_before", "in_process_after"):
        for name, row in res[when].items():
            lines.append(f"| {name} ({when.rsplit('_', 1)[1]}) | {row['1']['p50_ms']:.1f} | "
                         f"{row['1']['images_per_s']:.1f} | {row['8']['images_per_s']:.1f} |")
    lines += ["", f"Reference: best in-process batch 8 = {ref['images_per_s']:.1f} img/s ({ref['runtime']}).", "",
              "| server | concurrency | img/s | × best in-process b8 | p50 ms | p99 ms | mean batch | errors | CPU ms/img |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, rows in res["servers"].items():
        for r in rows:
            s, mb = r["stats"], r["mean_server_batch"]
            if not s:
                lines.append(f"| {label} | {r['concurrency']} | – | – | – | – | – | {r['errors']} | |")
                continue
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.get("cpu_ms_per_image", {}).items() if v >= 0.05)
            lines.append(f"| {label} | {r['concurrency']} | {s['images_per_s']:.1f} | "
                         f"{s['images_per_s'] / ref['images_per_s']:.2f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                         f"{'–' if mb is None else f'{mb:.2f}'} | {r['errors']} | {cpu} |")
    lines += ["", "| target | goal | measured | verdict |", "|---|---:|---:|---:|"]
    lines += [f"| {t['target']} | {t['goal']} | {t['measured']} | {t['verdict']} |" for t in res["targets"]]
    lines += ["", res["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=Path, required=True, help="the artefact (its runtime record beside it)")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--serve-arg", action="append", default=[], help="more `bonedeploy serve` options, "
                    "e.g. --serve-arg=--instances=1 (default: serve's own defaults)")
    ap.add_argument("--shm", action="store_true", help="also clients that pass tensors in system shared memory")
    ap.add_argument("--pytriton", action="store_true", help="also a PyTriton binding of the same backend")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--_pytriton-serve", dest="pytriton_serve", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.pytriton_serve:
        from bonedeploy.artefacts.triton import DEFAULT_QUEUE_DELAY_US

        return pytriton_server(a.onnx, [int(p) for p in a.pytriton_serve.split(",")], a.max_batch,
                               DEFAULT_QUEUE_DELAY_US)
    from bonedeploy.util.machine import machine_info, machine_slug

    levels = parse_concurrency(a.concurrency)
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    before = in_process(a.onnx, a.duration / 2)
    with open_backend(a.onnx) as b:
        shape = b.card.preprocess.input_shape
    serve_args = ["--max-batch", str(a.max_batch), *a.serve_arg]
    servers = {}
    with ServerProcess(a.onnx, extra=serve_args) as srv:
        runtime = served_runtime(srv.output)
        print(f"bonedeploy serve runs {runtime}", flush=True)
        host = srv.grpc if a.protocol == "grpc" else srv.http
        servers[f"serve ({a.protocol})"] = load_levels(f"serve {a.protocol}", srv.proc.pid, host, srv.name, shape,
                                                       levels, a.duration, a.protocol)
        if a.shm:
            servers[f"serve ({a.protocol} + shared memory)"] = load_levels(
                f"serve {a.protocol}+shm", srv.proc.pid, host, srv.name, shape, levels, a.duration, a.protocol, shm=True)
    if a.pytriton:
        servers["pytriton binding"] = run_pytriton(a.onnx, shape, levels, a.duration, a.protocol, a.max_batch)
    after = in_process(a.onnx, a.duration / 2)
    ref_name, ref = best_b8(before, after)
    info = machine_info()
    slug = machine_slug()
    res = {"artefact": str(a.onnx), "machine": slug, "cpu": info.get("cpu", "?"), "cores": info.get("cores", "?"),
           "protocol": a.protocol, "served_runtime": runtime, "served_backend": runtime.split(":")[0],
           "serve_args": serve_args, "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
           "load_before": load_before, "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
           "in_process_before": before, "in_process_after": after,
           "reference": {"runtime": ref_name, "images_per_s": ref}, "servers": servers,
           "note": (f"Clients are Python threads (tritonclient {a.protocol}) in the benchmark's process on the "
                    "same cores as the server, one preprocessed tensor per request. CPU ms/img: CPU time of "
                    "each process (or group) per answered image over the level's warm-up and measurement.")}
    res["targets"] = targets(res)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"serve-{slug}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (a.out / f"serve-{slug}.md").write_text(md)
    print("\n" + md)


if __name__ == "__main__":
    main()
