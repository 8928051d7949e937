"""Triton (``bonedeploy serve``) versus the in-process backend, same artefact, same machine, one run.

    python benchmarks/serve.py --onnx RUN/model.int8.onnx [--concurrency 1,4,8,16] [--duration 5]
                               [--protocol grpc] [--pytriton]

Rows: the in-process backend at batch 1 and batch 8 (compute only, a preprocessed tensor in
memory); then closed-loop clients on this machine sending one preprocessed 1 x C x H x W tensor
per request to the served ``NAME`` model at each concurrency, with the mean batch Triton formed
(its statistics endpoint). ``--pytriton`` adds the same load against a PyTriton ``Triton`` binding
of the same backend (the alternative design; its proxy process is one hop more).

Targets (issue 11, 2-core CPU, model.int8.onnx): Triton at concurrency 8 >= 0.8x the in-process
throughput at batch 8; Triton p50 at concurrency 1 <= in-process batch-1 p50 + 10 ms.
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
from bonedeploy.bench.timing import measure  # noqa: E402
from bonedeploy.serve.loadgen import closed_loop, parse_concurrency, server_batch_counts  # noqa: E402
from bonedeploy.serve.process import ServerProcess, free_ports  # noqa: E402


def in_process(onnx: Path, duration: float) -> dict:
    with open_backend(onnx) as b:
        x = np.random.default_rng(0).random((8, *b.card.preprocess.input_shape), dtype=np.float32)
        out = {}
        for bs in (1, 8):
            s = measure(lambda: b.infer(x[:bs]), bs, warmup_s=0.5, duration_s=duration, min_iterations=10)
            out[bs] = s
            print(f"in-process batch {bs}: p50 {s.p50_ms:.1f} ms, {s.images_per_s:.1f} img/s", flush=True)
        return out


def load_levels(label: str, host: str, model: str, shape, levels, duration: float, protocol: str) -> list:
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    rng = np.random.default_rng(1)
    stats_client = tc.InferenceServerClient(host)

    def make_worker(k: int):
        client = tc.InferenceServerClient(host)
        x = rng.random((1, *shape), dtype=np.float32)
        inp = tc.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = [tc.InferRequestedOutput("logits")]
        return lambda: client.infer(model, [inp], outputs=out)

    rows = []
    for c in levels:
        before = server_batch_counts(stats_client, model)
        r = closed_loop(make_worker, c, duration, warmup_s=1.0)
        after = server_batch_counts(stats_client, model)
        if before and after and after[1] > before[1]:
            r.mean_server_batch = (after[0] - before[0]) / (after[1] - before[1])
        s = r.stats
        print(f"{label} concurrency {c}: {s.images_per_s:.1f} img/s, p50 {s.p50_ms:.1f} ms, "
              f"p99 {s.p99_ms:.1f} ms, mean batch {r.mean_server_batch or float('nan'):.2f}, "
              f"errors {r.errors}", flush=True)
        rows.append(r)
    return rows


def pytriton_server(onnx: Path, ports: list[int], max_batch: int, delay_us: int) -> None:
    """The alternative design: PyTriton's binding of the same backend (runs in its own process)."""
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


def run_pytriton(onnx: Path, shape, levels, duration: float, protocol: str, delay_us: int) -> list:
    import urllib.request

    ports = free_ports(3)
    cmd = [sys.executable, __file__, "--onnx", str(onnx), "--_pytriton-serve", ",".join(map(str, ports)),
           "--max-queue-delay-us", str(delay_us)]
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
        return load_levels("pytriton", host, "bonedeploy", shape, levels, duration, protocol)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def render(res: dict) -> str:
    ip = res["in_process"]
    lines = [f"# Triton vs in-process: {Path(res['onnx']).name} on {res['machine']}", "",
             f"Command: `{res['command']}`", "",
             f"In-process ({res['backend']}): batch 1 p50 {ip['1']['p50_ms']:.1f} ms "
             f"({ip['1']['images_per_s']:.1f} img/s); batch 8 {ip['8']['images_per_s']:.1f} img/s.", "",
             "| server | concurrency | img/s | × in-process b8 | p50 ms | p99 ms | mean batch | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, rows in res["servers"].items():
        for r in rows:
            s = r["stats"]
            mb = r["mean_server_batch"]
            lines.append(f"| {label} | {r['concurrency']} | {s['images_per_s']:.1f} | "
                         f"{s['images_per_s'] / ip['8']['images_per_s']:.2f} | {s['p50_ms']:.1f} | "
                         f"{s['p99_ms']:.1f} | {'–' if mb is None else f'{mb:.2f}'} | {r['errors']} |")
    lines += ["", "Targets:"] + [f"- {t}" for t in res["targets"]]
    lines += ["", res["note"]]
    return "\n".join(lines) + "\n"


def targets(res: dict) -> list[str]:
    ip, out = res["in_process"], []
    for label, rows in res["servers"].items():
        by_c = {r["concurrency"]: r["stats"] for r in rows}
        if 8 in by_c:
            ratio = by_c[8]["images_per_s"] / ip["8"]["images_per_s"]
            out.append(f"{label}: concurrency 8 = {ratio:.2f}× in-process batch 8 (target >= 0.8: "
                       f"{'met' if ratio >= 0.8 else 'NOT met'})")
        if 1 in by_c:
            d = by_c[1]["p50_ms"] - ip["1"]["p50_ms"]
            out.append(f"{label}: p50 at concurrency 1 = in-process batch-1 p50 {d:+.1f} ms (target <= +10 ms: "
                       f"{'met' if d <= 10 else 'NOT met'})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    ap.add_argument("--max-queue-delay-us", type=int, default=1000)
    ap.add_argument("--pytriton", action="store_true", help="also measure a PyTriton binding")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--_pytriton-serve", dest="pytriton_serve", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.pytriton_serve:
        return pytriton_server(a.onnx, [int(p) for p in a.pytriton_serve.split(",")], 32, a.max_queue_delay_us)
    from bonedeploy.util.machine import machine_slug

    levels = parse_concurrency(a.concurrency)
    ip = in_process(a.onnx, a.duration)
    with open_backend(a.onnx) as b:
        shape, backend_desc = b.card.preprocess.input_shape, b.describe()
    servers = {}
    with ServerProcess(a.onnx, extra=["--max-queue-delay-us", str(a.max_queue_delay_us)]) as srv:
        host = srv.grpc if a.protocol == "grpc" else srv.http
        servers["bonedeploy serve"] = [r.to_dict() for r in load_levels(
            "bonedeploy serve", host, srv.name, shape, levels, a.duration, a.protocol)]
    if a.pytriton:
        servers["pytriton binding"] = [r.to_dict() for r in run_pytriton(
            a.onnx, shape, levels, a.duration, a.protocol, a.max_queue_delay_us)]
    slug = machine_slug()
    res = {"onnx": str(a.onnx), "machine": slug, "protocol": a.protocol, "backend": backend_desc.get("backend"),
           "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
           "in_process": {str(k): v.to_dict() for k, v in ip.items()}, "servers": servers,
           "note": (f"Clients are Python threads (tritonclient {a.protocol}) on the same machine as the "
                    "server, one preprocessed tensor per request; they share its cores.")}
    res["targets"] = targets(res)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"serve-{slug}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (a.out / f"serve-{slug}.md").write_text(md)
    print("\n" + md)


if __name__ == "__main__":
    main()
