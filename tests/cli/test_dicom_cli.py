"""The DICOM options on the command line: ``synth --format dicom`` then ``infer --dicom-sr``, and
``listen``'s refusals before it opens a port."""

import pytest

pytest.importorskip("highdicom")
pytest.importorskip("scipy")  # the synthetic renderer
pydicom = pytest.importorskip("pydicom", minversion="3.0")

from bonedeploy.artefacts.dicom_sr import read_finding  # noqa: E402
from bonedeploy.cli.app import main  # noqa: E402
from onnxkit import tiny_onnx_classifier  # noqa: E402


def run_cli(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_synth_dicom_then_infer_writes_one_report_per_instance(tmp_path, capsys):
    model = tiny_onnx_classifier(tmp_path / "tiny.onnx")
    code, _, err = run_cli(["synth", tmp_path / "dx", "--n", 4, "--format", "dicom", "--min-size", 240,
                            "--max-size", 256, "--workers", 1, "-q"], capsys)
    assert code == 0, err
    files = sorted((tmp_path / "dx").rglob("*.dcm"))
    assert len(files) == 4 and {pydicom.dcmread(f).Modality for f in files} == {"DX"}
    code, out, err = run_cli(["infer", tmp_path / "dx", "-e", model, "-o", tmp_path / "p.csv",
                              "--dicom-sr", tmp_path / "sr", "-j", 0], capsys)
    assert code == 0, err
    assert "wrote 4 DICOM structured reports" in out
    sources = {read_finding(p)[1][0] for p in (tmp_path / "sr").glob("*.sr.dcm")}
    assert sources == {pydicom.dcmread(f).SOPInstanceUID for f in files}


def test_listen_refuses_bad_options_before_opening_a_port(tmp_path, capsys):
    model = tiny_onnx_classifier(tmp_path / "tiny.onnx")
    for args, message in [
        ([model, "--spool", tmp_path / "s", "--forward", "ORTHANC@localhost"], "expected AET@HOST:PORT"),
        ([model, "--spool", tmp_path / "s", "--ae-title", "A" * 17], "1-16 printable ASCII"),
        ([model, "--spool", tmp_path / "s", "--tls-cert", tmp_path / "c.pem"], "go together"),
        (["--spool", tmp_path / "s"], "name the ENGINE"),
        (["--status", "--spool", tmp_path / "nothing"], "not a bonedeploy listen spool"),
    ]:
        code, _, err = run_cli(["listen", *args], capsys)
        assert code == 1 and message in " ".join(err.split()), (args, err)
