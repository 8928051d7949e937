"""``bonedeploy listen`` against real DICOM software: DCMTK's storescu/echoscu and pynetdicom's
storescu app as senders, Orthanc as the PACS. Every server runs on free loopback ports with
temporary storage and is stopped at the end; every wait is bounded.

The model is the tiny ONNX classifier (tests/onnxkit.py): the analysis path is infer's, so what
is checked here is the node: durability, idempotency, refusals, forwarding and the reports.
"""

from __future__ import annotations

import io
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom", minversion="3.0")

from bonedeploy.artefacts.dicom_sr import read_finding  # noqa: E402
from bonedeploy.data.synth import SynthConfig, generate_dataset  # noqa: E402
from bonedeploy.infer.run import InferConfig, run_inference  # noqa: E402
from dicomkit import (Node, Orthanc, echoscu, need, pynetdicom_storescu, send,  # noqa: E402
                      storescu, tiny_explain_onnx, wait_until)
from onnxkit import tiny_onnx_classifier  # noqa: E402

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
FAST = ("--max-wait", "0.2", "--retry-cap", "1")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("node")


@pytest.fixture(scope="module")
def engine(work):
    return tiny_onnx_classifier(work / "tiny.onnx")


@pytest.fixture(scope="module")
def studies(work) -> list[Path]:
    """9 synthetic DX instances in 3 studies (synth --format dicom)."""
    generate_dataset(work / "synth", SynthConfig(n=9, seed=11, image_format="dicom", min_size=240, max_size=260),
                     workers=1)
    return sorted((work / "synth").rglob("*.dcm"))


@pytest.fixture(scope="module")
def orthanc(work):
    with Orthanc(work / "orthanc") as o:
        yield o


@pytest.fixture(autouse=True)
def empty_orthanc(orthanc):
    for i in orthanc.get("/instances"):
        orthanc.delete(f"/instances/{i}")
    yield


def reports_in(orthanc) -> dict[str, list]:
    """{source SOP Instance UID: [(finding, report dataset), ...]} for every SR in Orthanc."""
    out: dict[str, list] = {}
    for inst in orthanc.find("SR"):
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(inst["ID"])))
        finding, sources = read_finding(ds)
        for uid in sources:
            out.setdefault(uid, []).append((finding, ds))
    return out


def clone(path: Path, n: int, tag: str) -> list:
    """``n`` copies of an instance, each with its own SOP Instance UID."""
    from pydicom.uid import generate_uid

    out = []
    for k in range(n):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[tag, str(k)])
        out.append(ds)
    return out


def assert_no_patient_data(logs: str, files) -> None:
    """Logs name SOP Instance UIDs, never a patient's name, ID or birth date."""
    assert logs.strip()
    for f in files:
        ds = f if isinstance(f, pydicom.Dataset) else pydicom.dcmread(f, stop_before_pixels=True)
        name = str(ds.PatientName)
        for value in {name, *name.split("^"), str(ds.PatientID), str(ds.PatientBirthDate)}:
            assert value not in logs, f"patient data {value!r} in the node's logs"


def test_round_trip_storescu_to_orthanc(work, engine, studies, orthanc):
    """storescu and pynetdicom's storescu -> listen -> one SR per instance in Orthanc, in its study,
    saying what infer says about the same file, valid for highdicom and dciodvfy."""
    node = Node(engine, work / "rt", "--forward", orthanc.address, *FAST)
    with node:
        assert echoscu(node.port).returncode == 0
        sent = storescu(node.port, studies[:6])
        assert sent.returncode == 0, sent.stderr
        sent = pynetdicom_storescu(node.port, studies[6:])
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_until(lambda: len(orthanc.find("SR")) >= len(studies), 60, "9 SRs in Orthanc")
        status = node.status()
    assert status["states"]["forwarded"] == 9 and status["destinations"][orthanc.address]["pending"] == 0
    infer = run_inference(InferConfig(engine=engine, inputs=tuple(studies), out=work / "rt.csv", workers=0))
    assert infer.ok == 9
    import csv

    expected = {r["path"]: r for r in csv.DictReader((work / "rt.csv").open())}
    got = reports_in(orthanc)
    for path in studies:
        src = pydicom.dcmread(path, stop_before_pixels=True)
        [(finding, sr)] = got[src.SOPInstanceUID]  # exactly one, referencing this instance
        assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.PatientID == src.PatientID
        assert sr.SeriesInstanceUID != src.SeriesInstanceUID
        row = expected[str(path)]
        assert finding.present == (row["predicted"] == "Fractured")
        assert finding.probability == pytest.approx(float(row["p_Fractured"]), abs=1e-6)
    _valid_sr(work, orthanc)
    assert_no_patient_data(node.log(), studies)


def _valid_sr(work, orthanc) -> None:
    import highdicom as hd

    inst = orthanc.find("SR")[0]
    path = work / "from-orthanc.sr.dcm"
    path.write_bytes(orthanc.instance_file(inst["ID"]))
    assert isinstance(hd.sr.srread(path), hd.sr.Comprehensive3DSR)
    _no_dciodvfy_error(path)


def _no_dciodvfy_error(path) -> None:
    import shutil
    import subprocess

    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        assert not [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")], out.stderr


def test_compressed_instances_are_decoded_as_infer_decodes_the_originals(work, engine, studies, orthanc):
    """12-bit JPEG Lossless (DCMTK's dcmcjpeg; a syntax another loader has zero-filled), JPEG-LS
    (dcmcjpls) and RLE (dcmcrle), sent compressed by storescu: each report equals infer on the
    uncompressed original."""
    import csv
    import subprocess

    originals = studies[:3]
    compressed = []  # (file, the storescu option that proposes its transfer syntax)
    for tool, flag, propose, src in (("dcmcjpeg", "+e1", "-xs", originals[0]), ("dcmcjpls", "+el", "-xt", originals[1]),
                                     ("dcmcrle", None, "-xr", originals[2])):
        out = work / f"{src.stem}.{tool}.dcm"
        subprocess.run([need(tool), *([flag] if flag else []), str(src), str(out)], check=True, timeout=60,
                       capture_output=True)
        assert pydicom.dcmread(out).file_meta.TransferSyntaxUID.is_compressed
        compressed.append((out, propose))
    infer = run_inference(InferConfig(engine=engine, inputs=tuple(originals), out=work / "orig.csv", workers=0))
    assert infer.ok == 3
    expected = {pydicom.dcmread(r["path"]).SOPInstanceUID: r for r in csv.DictReader((work / "orig.csv").open())}
    node = Node(engine, work / "compressed", "--forward", orthanc.address, *FAST)
    with node:
        for path, propose in compressed:
            sent = storescu(node.port, [path], options=(propose,))
            assert sent.returncode == 0, sent.stderr
        wait_until(lambda: len(orthanc.find("SR")) >= 3, 60, "3 SRs in Orthanc")
    spooled = [pydicom.dcmread(p) for p in (work / "compressed" / "incoming").glob("*.dcm")]
    assert all(d.file_meta.TransferSyntaxUID.is_compressed for d in spooled)  # received as sent
    for uid, [(finding, _)] in reports_in(orthanc).items():
        assert finding.present is not None, finding.not_analysed
        assert finding.probability == pytest.approx(float(expected[uid]["p_Fractured"]), abs=1e-6)


def test_faults_in_one_stream(work, engine, studies, orthanc):
    """A corrupt instance, a non-radiograph and a resend among good instances; an unsupported SOP
    class refused by DIMSE status; a caller not in --allow-ae refused at association."""
    good = [pydicom.dcmread(p) for p in studies[:3]]
    corrupt = clone(studies[3], 1, "corrupt")[0]
    corrupt.PixelData = corrupt.PixelData[: len(corrupt.PixelData) // 3]  # truncated pixel data
    mr = clone(studies[4], 1, "mr")[0]
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    mr.Modality = "MR"
    ct = clone(studies[5], 1, "ct")[0]
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    node = Node(engine, work / "faults", "--forward", orthanc.address, "--allow-ae", "TESTSCU",
                "--allow-ae", "MODALITY", *FAST)
    with node:
        statuses = send(node.port, [good[0], corrupt, good[1], mr, ct, good[2], good[0]])
        assert statuses == [0, 0, 0, 0, 0x0122, 0, 0]
        assert echoscu(node.port, calling="STRANGER").returncode != 0  # not in --allow-ae
        assert echoscu(node.port, calling="MODALITY").returncode == 0
        wait_until(lambda: len(orthanc.find("SR")) >= 5, 60, "5 SRs in Orthanc")
        time.sleep(1.0)  # a second report for the resent instance would arrive by now
        status = node.status()
    got = reports_in(orthanc)
    assert sorted(map(len, got.values())) == [1] * 5  # one report each, the resend included
    assert ct.SOPInstanceUID not in got
    assert "truncated pixel data" in got[corrupt.SOPInstanceUID][0][0].not_analysed
    assert "modality MR is not a radiograph" in got[mr.SOPInstanceUID][0][0].not_analysed
    assert all(got[d.SOPInstanceUID][0][0].present is not None for d in good)
    assert status["not_analysed"] == 2 and status["duplicates_received"] == 1
    logs = node.log()
    assert "refused SOP class 1.2.840.10008.5.1.4.1.1.2" in logs and "STRANGER" in logs
    assert_no_patient_data(logs, [*good, corrupt, mr, ct])


ROUTE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Modality'] == 'DX' or tags['Modality'] == 'CR' then
    SendToModality(instanceId, 'bonedeploy')
  end
end
"""


def test_pacs_routes_radiographs_to_the_node_and_files_the_reports(work, engine, studies):
    """The topology of docs/pacs.md: the modality sends to the PACS, a PACS routing rule (Orthanc
    Lua) sends DX/CR on to the node, and the node's reports come back into the same studies."""
    from dicomkit import free_port

    port = free_port()
    script = work / "route.lua"
    script.write_text(ROUTE_LUA)
    pacs = Orthanc(work / "routing", DicomModalities={"bonedeploy": ["BONEDEPLOY", "127.0.0.1", port]},
                   LuaScripts=[str(script)])
    with pacs, Node(engine, work / "routed", "--forward", pacs.address, *FAST, port=port):
        sent = storescu(pacs.dicom_port, studies[:3], aet=pacs.aet)
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: len(pacs.find("SR")) >= 3, 60, "3 SRs routed back into Orthanc")
        got = reports_in(pacs)
        n_studies = len(pacs.get("/studies"))
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in studies[:3]]
    for src in sources:
        [(_, sr)] = got[src.SOPInstanceUID]
        assert sr.StudyInstanceUID == src.StudyInstanceUID
    assert n_studies == len({s.StudyInstanceUID for s in sources})  # no study of its own for a report


def test_reports_wait_for_a_pacs_that_is_down(work, engine, studies):
    """Orthanc stopped while instances arrive: the node keeps retrying, and every report arrives
    after Orthanc restarts; --status shows the queue and the last error meanwhile."""
    pacs = Orthanc(work / "pacs-down")
    node = Node(engine, work / "down", "--forward", pacs.address, *FAST)
    with node:
        assert send(node.port, [pydicom.dcmread(p) for p in studies[:4]]) == [0] * 4
        status = wait_until(lambda: (s := node.status())["destinations"].get(pacs.address, {}).get("last_error")
                            and s, 30, "a forwarding error")
        assert status["states"]["reported"] == 4 and status["destinations"][pacs.address]["pending"] == 4
        with pacs:
            wait_until(lambda: len(pacs.find("SR")) >= 4, 60, "the reports after Orthanc started")
            assert len(reports_in(pacs)) == 4
        assert wait_until(lambda: node.status()["states"]["forwarded"] == 4, 30, "state forwarded")


def test_kill_9_mid_stream_then_restart(work, engine, studies, orthanc):
    """Every instance that got a success status ends with exactly one SR in Orthanc, after a
    kill -9 of the node mid-stream and a restart on the same spool (and a sender resending all)."""
    batch = clone(studies[0], 40, "kill")
    node = Node(engine, work / "kill", "--forward", orthanc.address, *FAST)
    node.start()
    acked: list[int | None] = []

    def sender():
        for ds in batch:  # one association per instance, as a sender retrying one by one would
            acked.extend(send(node.port, [ds]))

    t = threading.Thread(target=sender)
    try:
        t.start()
        wait_until(lambda: sum(s == 0 for s in acked) >= 15, 60, "15 acknowledged instances")
        node.stop(signal.SIGKILL)
        t.join(120)
        ok = {ds.SOPInstanceUID for ds, s in zip(batch, acked) if s == 0}
        assert 15 <= len(ok) < len(batch), "the kill did not land mid-stream"
        node.start()
        assert send(node.port, batch) == [0] * len(batch)  # the sender resends everything
        wait_until(lambda: len(orthanc.find("SR")) >= len(batch), 90, "every report after the restart")
        time.sleep(1.0)
    finally:
        node.stop()
    got = reports_in(orthanc)
    assert ok <= set(got) and all(len(got[uid]) == 1 for uid in got)
    assert set(got) == {ds.SOPInstanceUID for ds in batch}


def test_load_four_associations_of_fifty(work, engine, studies, orthanc):
    """4 concurrent associations x 50 instances: 0 lost, 0 duplicated."""
    sets = [clone(studies[k], 50, f"load{k}") for k in range(4)]
    node = Node(engine, work / "load", "--forward", orthanc.address, *FAST)
    results: dict[int, list] = {}
    with node:
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, send(node.port, sets[k])))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert all(results[k] == [0] * 50 for k in range(4))
        wait_until(lambda: len(orthanc.find("SR")) >= 200, 240, "200 SRs in Orthanc", every=1.0)
        status = node.status()
    got = reports_in(orthanc)
    assert set(got) == {ds.SOPInstanceUID for s in sets for ds in s}
    assert all(len(v) == 1 for v in got.values())
    assert status["states"]["forwarded"] == 200 and status["duplicates_received"] == 0
    assert_no_patient_data(node.log(), [s[0] for s in sets])


def test_overlay_is_a_secondary_capture_labelled_as_an_ai_result(work, studies, orthanc):
    """--overlay: beside each report, a Secondary Capture of the Grad-CAM overlay (from
    model.explain.onnx beside the engine) in the source's study, labelled as an AI result."""
    folder = work / "with-explain"
    folder.mkdir(exist_ok=True)
    engine = tiny_onnx_classifier(folder / "model.onnx")
    tiny_explain_onnx(folder / "model.explain.onnx", engine)
    node = Node(engine, work / "overlay", "--forward", orthanc.address, "--overlay", *FAST)
    with node:
        assert send(node.port, [pydicom.dcmread(p) for p in studies[:2]]) == [0, 0]
        wait_until(lambda: len(orthanc.get("/instances")) >= 4, 60, "2 SRs and 2 overlays in Orthanc")
    files = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for i in orthanc.get("/instances")]
    overlays = [d for d in files if d.SOPClassUID == SECONDARY_CAPTURE]
    assert len(overlays) == 2
    sources = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in studies[:2]}
    for sc in overlays:
        assert sc.StudyInstanceUID in sources and "AI RESULT" in sc.SeriesDescription
        assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
        rgb = sc.pixel_array
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.std() > 0
    path = work / "overlay.sc.dcm"
    overlays[0].save_as(path)
    _no_dciodvfy_error(path)


def test_tls_only_when_given_a_certificate(work, engine):
    """--tls-cert/--tls-key: a TLS client (pynetdicom with an SSL context) is answered, a plain
    one (DCMTK's echoscu without TLS) is not."""
    import ssl
    import subprocess

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    openssl = need("openssl")
    cert, key = work / "node.crt", work / "node.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    node = Node(engine, work / "tls", "--tls-cert", str(cert), "--tls-key", str(key))
    with node:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="BONEDEPLOY", tls_args=(client, "localhost"))
        try:
            assert assoc.is_established and assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
        assert echoscu(node.port).returncode != 0


def test_status_without_a_spool_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bonedeploy", "listen", "--status", "--spool", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a bonedeploy listen spool" in out.stderr


def test_binds_loopback_by_default(work, engine):
    need("echoscu")
    node = Node(engine, work / "bind")
    with node:
        assert "listening as BONEDEPLOY@127.0.0.1:" in node.log()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
