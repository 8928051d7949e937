"""``bonedeploy serve`` for real: a tritonserver child process on free loopback ports, tritonclient
over HTTP and gRPC, and ``infer --engine grpc://...``. One server per module (start-up is the
slow part); every server is bounded in time and killed whatever happens."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bonedeploy.infer.run import InferConfig, run_inference
from onnxkit import tiny_card, tiny_logits, tiny_onnx_classifier

pytest.importorskip("pytriton", reason="needs the [serve] extra (nvidia-pytriton)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs the [serve] extra (tritonclient[grpc])")
httpclient = pytest.importorskip("tritonclient.http", reason="needs the [serve] extra (tritonclient[http])")

from bonedeploy.eval.metrics import softmax  # noqa: E402
from bonedeploy.serve.process import ServerProcess, free_ports  # noqa: E402

pytestmark = pytest.mark.timeout(300)
CROP = 32


def png_bytes(level: int, size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), level, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    return tiny_onnx_classifier(tmp_path_factory.mktemp("engine") / "tiny.onnx", tiny_card(crop=CROP))


@pytest.fixture(scope="module")
def server(engine):
    srv = ServerProcess(engine, extra=["--max-request-mb", "1", "--max-batch", "16",
                                       "--max-queue-delay-us", "500"])
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for cls, levels in (("Fractured", range(150, 250, 20)), ("Normal", range(10, 110, 20))):
        (root / cls).mkdir()
        for lv in levels:
            (root / cls / f"g{lv}.png").write_bytes(png_bytes(lv, size=36 + lv % 7))
    (root / "Normal" / "corrupt.png").write_bytes(png_bytes(90)[:60])  # truncated
    return root


def client(server, proto):
    return (grpcclient.InferenceServerClient(server.grpc) if proto == "grpc"
            else httpclient.InferenceServerClient(server.http))


def lib(proto):
    return grpcclient if proto == "grpc" else httpclient


def infer_tensor(c, proto, x, model="bonedeploy"):
    tc = lib(proto)
    inp = tc.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return c.infer(model, [inp])


def infer_files(c, proto, blobs, model="bonedeploy_file"):
    tc = lib(proto)
    arr = np.array([[b] for b in blobs], dtype=object)
    inp = tc.InferInput("file", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    r = c.infer(model, [inp])
    text = lambda a: [v.decode() for v in a.reshape(-1)]  # noqa: E731
    return r.as_numpy("probs"), text(r.as_numpy("label")), text(r.as_numpy("status"))


def local_rows(engine, folder, tmp_path) -> dict[str, dict]:
    out = tmp_path / "local.csv"
    run_inference(InferConfig(engine=engine, inputs=(folder,), out=out, workers=0))
    return {Path(r["path"]).name: r for r in csv.DictReader(out.open())}


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


# --- operations ----------------------------------------------------------------------------------

def test_health_metrics_config_and_printed_urls(server):
    base = f"http://{server.http}"
    assert get(base + "/v2/health/live")[0] == 200 and get(base + "/v2/health/ready")[0] == 200
    status, metrics = get(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert status == 200 and "nv_inference_request_success" in metrics
    cfg = json.loads(get(base + "/v2/models/bonedeploy/config")[1])
    assert cfg["max_batch_size"] == 16
    assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 500
    card = json.loads(cfg["parameters"]["bonedeploy.card"]["string_value"])
    assert card["classes"] == ["Fractured", "Normal"] and card["preprocess"]["crop_size"] == CROP
    assert len(cfg["parameters"]["bonedeploy.artefact_sha256"]["string_value"]) == 64
    banner = "".join(server.output)
    for url in (f"http://127.0.0.1:{server.http_port}", f"grpc://127.0.0.1:{server.grpc_port}",
                f"http://127.0.0.1:{server.metrics_port}/metrics"):
        assert url in banner


# --- parity --------------------------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_tensors_and_file_bytes_match_in_process_infer(server, engine, folder, tmp_path, proto):
    local = local_rows(engine, folder, tmp_path)
    files = sorted(p for p in folder.rglob("g*.png"))
    from bonedeploy.data.imageio import load_preprocessed

    x = np.stack([load_preprocessed(p, tiny_card(crop=CROP).preprocess) for p in files])
    c = client(server, proto)
    r = infer_tensor(c, proto, x)
    probs_t = r.as_numpy("probs")
    probs_f, labels, status = infer_files(c, proto, [p.read_bytes() for p in files])
    want = np.array([[float(local[p.name]["p_Fractured"]), float(local[p.name]["p_Normal"])] for p in files])
    assert status == ["ok"] * len(files)
    np.testing.assert_allclose(probs_t, want, atol=1e-5)  # the CSV has 6 decimals
    np.testing.assert_allclose(probs_f, want, atol=1e-5)
    np.testing.assert_allclose(probs_t, softmax(r.as_numpy("logits")), atol=1e-7)
    assert labels == [local[p.name]["predicted"] for p in files]


def test_a_corrupt_or_oversized_file_gets_its_own_error_status(server):
    good = [png_bytes(200), png_bytes(30)]
    big = png_bytes(128)[:8] + os.urandom(int(1.5 * 2**20))  # over --max-request-mb 1
    blobs = [good[0], b"\x89PNG\r\n\x1a\n broken", good[1], b"", big, b"%PDF-1.4 not an image"]
    probs, labels, status = infer_files(client(server, "grpc"), "grpc", blobs)
    assert status[0] == status[2] == "ok" and labels[0] == "Fractured" and labels[2] == "Normal"
    assert status[1].startswith("error: truncated or corrupt PNG")
    assert status[3] == "error: empty file (0 bytes)"
    assert "exceeds the server's --max-request-mb 1" in status[4]
    assert status[5].startswith("error: not an image")
    np.testing.assert_allclose(probs[0].sum(), 1.0, atol=1e-6)
    probs2, _, status2 = infer_files(client(server, "http"), "http", good)  # still serving
    assert status2 == ["ok", "ok"] and np.allclose(probs2, probs[[0, 2]], atol=1e-6)


def test_a_wrong_tensor_request_is_refused_not_fatal(server):
    from tritonclient.utils import InferenceServerException

    c = client(server, "grpc")
    with pytest.raises(InferenceServerException):
        infer_tensor(c, "grpc", np.zeros((1, 1, CROP + 1, CROP), np.float32))
    with pytest.raises(InferenceServerException):
        infer_tensor(c, "grpc", np.zeros((17, 1, CROP, CROP), np.float32))  # over --max-batch 16
    assert infer_tensor(c, "grpc", np.zeros((1, 1, CROP, CROP), np.float32)).as_numpy("probs").shape == (1, 2)


# --- load ----------------------------------------------------------------------------------------

def test_eight_concurrent_clients_each_get_their_own_answers(server):
    """8 clients x 100 requests, half HTTP half gRPC; every request has its own image mean, so
    a response that belongs to another request (or a batch mix-up) fails the comparison."""
    failures: list[str] = []

    def run(k: int) -> None:
        proto = "grpc" if k % 2 else "http"
        c = client(server, proto)
        rng = np.random.default_rng(k)
        try:
            for i in range(100):
                n = 1 + (i % 3)
                x = np.full((n, 1, CROP, CROP), 0.0, np.float32) + rng.random((n, 1, 1, 1), dtype=np.float32)
                got = infer_tensor(c, proto, x).as_numpy("logits")
                if not np.allclose(got, tiny_logits(x), atol=1e-4):
                    failures.append(f"client {k} request {i}: {got} != {tiny_logits(x)}")
        except Exception as e:  # noqa: BLE001
            failures.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not failures, failures[:5]
    stats = client(server, "grpc").get_inference_statistics("bonedeploy", as_json=True)
    ms = stats["model_stats"][0]
    assert int(ms["inference_count"]) >= 8 * 100  # the server really did the work (batched or not)


KILLED_CLIENT = """
import sys, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(sys.argv[1])
arr = np.array([[open(sys.argv[2], 'rb').read()]] * 16, dtype=object)
i = g.InferInput('file', list(arr.shape), 'BYTES'); i.set_data_from_numpy(arr)
print('sending', flush=True)
while True:
    c.infer('bonedeploy_file', [i])
"""


def test_a_client_killed_mid_request_leaves_the_server_serving(server, tmp_path):
    img = tmp_path / "big.png"
    img.write_bytes(png_bytes(120, size=900))
    p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, server.grpc, str(img)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"sending"
        time.sleep(0.7)
    finally:
        p.kill()
        p.wait(10)
    probs, _, status = infer_files(client(server, "grpc"), "grpc", [png_bytes(220)])
    assert status == ["ok"] and probs[0, 0] > 0.5


# --- remote infer --------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme,remote_decode", [("grpc", False), ("http", True)])
def test_infer_against_the_server_equals_local_infer_row_for_row(server, engine, folder, tmp_path,
                                                                  scheme, remote_decode):
    from bonedeploy.cli.app import main

    local = tmp_path / "local.csv"
    remote = tmp_path / "remote.csv"
    run_inference(InferConfig(engine=engine, inputs=(folder,), out=local, workers=0, batch_size=4))
    args = ["infer", "--engine", server.url(scheme), str(folder), "--out", str(remote), "-q", "-j", "0",
            "-b", "4"] + (["--remote-decode"] if remote_decode else [])
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 3  # the corrupt file: the same exit code as local inference
    assert remote.read_text() == local.read_text()
    meta = json.loads((tmp_path / "remote.csv.run.json").read_text())
    assert meta["engine_sha256"] == json.loads((tmp_path / "local.csv.run.json").read_text())["engine_sha256"]


def test_remote_resume_continues_and_refuses_another_model(server, engine, folder, tmp_path):
    out = tmp_path / "p.json"
    cfg = dict(engine=Path(server.url("grpc")), inputs=(folder,), out=out, workers=0, batch_size=2)
    first = run_inference(InferConfig(**cfg))
    again = run_inference(InferConfig(**cfg, resume=True))
    assert again.processed == 0 and again.resumed == first.total
    # A record naming another artefact: resuming against this server is refused.
    rec = tmp_path / "p.json.run.json"
    rec.write_text(json.dumps({"engine": "other.onnx", "engine_sha256": "0" * 64}))
    from bonedeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="resume with the same engine"):
        run_inference(InferConfig(**cfg, resume=True))


# --- refusals before start-up and shutdown -------------------------------------------------------

def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bonedeploy", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_port_in_use_is_one_clear_error_naming_the_port(engine):
    http, grpc, metrics = free_ports(3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", grpc))
        s.listen()
        r = run_cli("serve", str(engine), "--http-port", str(http), "--grpc-port", str(grpc),
                    "--metrics-port", str(metrics))
    assert r.returncode == 1
    assert f"port {grpc} on 127.0.0.1 is already in use (grpc)" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_or_incompatible_engine_is_refused_like_infer(tmp_path, folder):
    ports = [str(p) for p in free_ports(3)]
    opts = ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    r = run_cli("serve", str(tmp_path / "nope.onnx"), *opts)
    i = run_cli("infer", "--engine", str(tmp_path / "nope.onnx"), str(folder), "-q")
    assert r.returncode == i.returncode == 1
    assert "engine not found" in r.stderr and r.stderr.strip() == i.stderr.strip()
    rgb = tiny_onnx_classifier(tmp_path / "rgb.onnx", tiny_card(crop=CROP, channels=3))
    r = run_cli("serve", str(rgb), *opts)
    assert r.returncode == 1 and "wrong engine for radiographs" in r.stderr


def test_sigterm_under_load_stops_within_ten_seconds_and_frees_the_ports(engine, tmp_path):
    # From another working directory: the Python-backend stub must still find this bonedeploy.
    srv = ServerProcess(engine, name="term", cwd=tmp_path)
    stop = threading.Event()
    try:
        srv.start()

        def load():
            c = grpcclient.InferenceServerClient(srv.grpc)
            x = np.zeros((4, 1, CROP, CROP), np.float32)
            while not stop.is_set():
                try:
                    infer_tensor(c, "grpc", x, model="term")
                except Exception:  # noqa: BLE001 -- refused once the server goes
                    time.sleep(0.05)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        rc = srv.wait(12)
        took = time.monotonic() - t0
        assert rc == 0, "".join(srv.output[-20:])
        assert took <= 10.0
        for port in (srv.http_port, srv.grpc_port, srv.metrics_port):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))  # free again
    finally:
        stop.set()
        srv.stop()


def test_remote_bench_measures_each_concurrency_and_parity_against_the_local_file(server, engine, tmp_path):
    from bonedeploy.serve.remote_bench import RemoteBenchConfig, run_remote_bench

    report = run_remote_bench(RemoteBenchConfig(engine=server.url("grpc"), concurrency=(1, 3), duration_s=0.6,
                                                warmup_s=0.2, reference=(engine,), parity_n=16,
                                                json_path=tmp_path / "r.json"))
    assert [r.concurrency for r in report.levels] == [1, 3]
    assert all(r.errors == 0 and r.requests > 0 for r in report.levels)
    assert all(r.mean_server_batch is not None and r.mean_server_batch >= 1 for r in report.levels)
    assert report.parity["max_abs_dprob"] <= 1e-6 and report.parity["top1_agreement"] == 1.0
    assert json.loads((tmp_path / "r.json").read_text())["levels"][1]["concurrency"] == 3
