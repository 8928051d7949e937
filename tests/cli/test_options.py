"""One truth per default and one meaning per option, checked over every command the app has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bonedeploy.cli import options as opts
from bonedeploy.cli.app import COMMANDS, app
from clikit import flags, help_text, options

NAMES = [name for name, _ in COMMANDS]
# Same flag, different meaning, on purpose (what each means is in its help).
INTENDED = {
    "--engine": "infer: the model to run (a file or a Triton URL); bench: a Triton URL to load-test",
    "--explain": "export: also write the explain graph (a flag); infer: write Grad-CAM maps into DIR",
    "--resume": "train: the run folder to continue; infer: continue the --out file (a flag)",
}
# Shared options whose help is the same text wherever they appear.
FIXED_HELP = {"quiet", "debug", "device", "provider", "val", "skip-bad", "parity-n", "target-sensitivity",
              "threshold", "difficulty", "name"}


@pytest.mark.parametrize("name", NAMES)
def test_the_cli_declares_no_default_values(name):
    """Defaults live in the library: an option passes None unless given (False for a plain flag,
    ... for a required option), and --help reads the library's value."""
    for param, info in options(name).items():
        assert info.default is None or info.default is False or info.default is ..., (
            f"{name} {param}: the CLI declares the default {info.default!r}; the library config owns it "
            "(declare it with bonedeploy.cli.options.option(..., default_from=lib(...)))")


@pytest.mark.parametrize("name", NAMES)
def test_library_defaults_resolve_and_help_shows_them(name):
    """Each ``default_from`` names something that exists, and --help shows its value."""
    out = " ".join(help_text(name, columns=1000).split())
    for param, info in options(name).items():
        ref = opts.meta(info).library_default
        if ref is None:
            continue
        value = ref.value()
        shown = opts.show(value)
        if isinstance(value, bool):  # --x/--no-x: the flag that is on
            on, off = flags(info)[:2]
            shown = (on if value else off).lstrip("-")
        assert f"[default: {shown}]" in out, f"{name} {param}"


def test_the_queue_delay_shown_is_the_one_the_server_uses():
    from bonedeploy.artefacts.triton import DEFAULT_QUEUE_DELAY_US
    from bonedeploy.serve.server import ServeConfig

    assert ServeConfig(engine=Path("m.onnx")).max_queue_delay_us == DEFAULT_QUEUE_DELAY_US
    assert f"[default: {DEFAULT_QUEUE_DELAY_US}]" in " ".join(help_text("serve", columns=1000).split())


def test_an_option_in_several_commands_has_one_declaration():
    """The same flag in two commands comes from the same factory in bonedeploy.cli.options, with the
    same spellings; where its help is fixed, the same text."""
    seen: dict[str, list[tuple[str, object]]] = {}
    for name in NAMES:
        for info in options(name).values():
            seen.setdefault(flags(info)[0], []).append((name, info))
    shared = {flag: decls for flag, decls in seen.items() if len(decls) > 1 and flag not in INTENDED}
    assert {"--quiet", "--out", "--device", "--batch-size", "--workers", "--backend"} <= set(shared)
    for flag, decls in shared.items():
        tags = {opts.meta(info).shared for _, info in decls}
        assert len(tags) == 1 and None not in tags, f"{flag}: declared apart in {[n for n, _ in decls]}"
        assert len({flags(info) for _, info in decls}) == 1, f"{flag}: spelt differently"
        if tags <= FIXED_HELP:
            assert len({info.help for _, info in decls}) == 1, f"{flag}: {len(decls)} meanings"


@pytest.mark.parametrize("name", [n for n in NAMES if "quiet" in options(n)])
def test_quiet_means_one_thing(name):
    assert options(name)["quiet"].help == opts.QUIET_HELP


# --- with no options, each command builds exactly the library's default config ------------------
class Captured(Exception):
    pass


def capture(monkeypatch, target: str, pick=lambda *a, **k: a[0]) -> list:
    got: list = []

    def fake(*args, **kwargs):
        got.append(pick(*args, **kwargs))
        raise Captured

    monkeypatch.setattr(target, fake)
    return got


def invoke(*args: str):
    r = CliRunner().invoke(app, list(args))
    assert isinstance(r.exception, Captured), (r.output, r.exception)


def without_command(config):
    return dataclasses.replace(config, command=None)


def test_serve_and_remote_bench_build_their_default_configs(monkeypatch):
    from bonedeploy.serve.remote_bench import RemoteBenchConfig
    from bonedeploy.serve.server import ServeConfig

    got = capture(monkeypatch, "bonedeploy.serve.server.run_server")
    invoke("serve", "m.onnx")
    assert got == [ServeConfig(engine=Path("m.onnx"))]
    got = capture(monkeypatch, "bonedeploy.serve.remote_bench.run_remote_bench")
    invoke("bench", "--engine", "grpc://127.0.0.1:1/m")
    assert got == [RemoteBenchConfig(engine="grpc://127.0.0.1:1/m")]


def test_bench_infer_explain_calibrate_build_their_default_configs(monkeypatch):
    from bonedeploy.bench import BenchConfig
    from bonedeploy.eval.calibration import CalibrateConfig
    from bonedeploy.explain.run import ExplainConfig
    from bonedeploy.infer.run import InferConfig

    got = capture(monkeypatch, "bonedeploy.bench.bench")
    invoke("bench")
    assert [without_command(c) for c in got] == [BenchConfig()]
    got = capture(monkeypatch, "bonedeploy.infer.run.run_inference")
    invoke("infer", "-e", "m.onnx", "x.png")
    assert got == [InferConfig(engine=Path("m.onnx"), inputs=(Path("x.png"),))]
    got = capture(monkeypatch, "bonedeploy.explain.run.explain")
    invoke("explain", "best.pt", "x.png", "-o", "maps")
    assert got == [ExplainConfig(Path("best.pt"), (Path("x.png"),), Path("maps"))]
    got = capture(monkeypatch, "bonedeploy.eval.calibration.calibrate_checkpoint")
    invoke("calibrate", "best.pt")
    assert got == [CalibrateConfig(Path("best.pt"))]


def test_export_builds_the_default_config_and_maps_its_options(monkeypatch):
    from bonedeploy.export.results import ExportConfig
    from bonedeploy.export.tensorrt import BatchProfile

    got = capture(monkeypatch, "bonedeploy.export.from_checkpoint.run_export")
    invoke("export", "best.pt")
    invoke("export", "best.pt", "--max-accuracy-drop", "2", "--gate-fp16", "0.03", "--flip-margin", "0.1",
           "--profile", "jetson", "--batch", "2,4,8", "--workspace", "512")
    default, custom = got
    assert default == ExportConfig(source=Path("best.pt"))
    assert custom.gates["int8"].max_accuracy_drop == pytest.approx(0.02)  # points -> fraction
    assert (custom.gates["fp16"].max_abs_dprob, custom.gates["fp16"].flip_margin) == (0.03, 0.1)
    assert custom.precisions == ("fp32", "fp16") and custom.engine_from == "fp16"  # from the profile
    assert (custom.batch, custom.workspace_mb) == (BatchProfile(2, 4, 8), 512)  # the options win


def test_synth_sweep_demo_and_train_build_their_default_configs(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("scipy")
    from bonedeploy.data.synth import SynthConfig
    from bonedeploy.demo import DemoConfig
    from bonedeploy.training import TrainConfig
    from bonedeploy.training.sweep import SweepConfig

    got = capture(monkeypatch, "bonedeploy.data.synth.generate_dataset", pick=lambda out, config, **k: config)
    invoke("synth", "out")
    assert got == [SynthConfig()]
    got = capture(monkeypatch, "bonedeploy.training.sweep.run_sweep")
    invoke("sweep", "r.toml", "data")
    assert [without_command(c) for c in got] == [SweepConfig(recipe="r.toml", data="data")]
    got = capture(monkeypatch, "bonedeploy.demo.run_demo")
    invoke("demo")
    assert got == [DemoConfig()]
    got = capture(monkeypatch, "bonedeploy.training.train")
    invoke("train", "data")
    assert got == [TrainConfig(data="data")]


# --- --quiet: warnings, errors and the final line ------------------------------------------------
def run_quiet(args, capsys) -> tuple[list[str], str]:
    from bonedeploy.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main([*map(str, args), "--quiet"])
    out = capsys.readouterr()
    assert exc.value.code in (0, None), out
    return out.out.splitlines(), out.err


def test_quiet_infer_prints_the_final_line_only(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from onnxkit import tiny_onnx_classifier

    model = tiny_onnx_classifier(tmp_path / "m.onnx")
    for cls, level in (("Fractured", 200), ("Normal", 50)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(np.full((36, 36), level, np.uint8)).save(tmp_path / "imgs" / cls / "a.png")
    lines, err = run_quiet(["infer", "-e", model, tmp_path / "imgs", "-o", tmp_path / "p.csv", "-j", "0"], capsys)
    assert err == "" and len(lines) == 1, lines
    assert re.match(r"2 images: 2 ok, 0 failed; .* -> .*p\.csv$", lines[0]), lines


def test_quiet_synth_prints_the_final_line_only(tmp_path, capsys):
    pytest.importorskip("scipy")
    lines, err = run_quiet(["synth", tmp_path / "s", "--n", "4", "--min-size", "240", "--max-size", "260",
                            "--workers", "1"], capsys)
    assert err == "" and len(lines) == 1 and lines[0].startswith(f"wrote {tmp_path / 's'}: "), lines


def test_quiet_bench_prints_what_it_wrote(tmp_path, capsys):
    from onnxkit import tiny_onnx_classifier

    tiny_onnx_classifier(tmp_path / "model.onnx")
    js = tmp_path / "b.json"
    lines, err = run_quiet(["bench", "--dir", tmp_path, "--batch-sizes", "1", "--duration", "0.01", "--warmup",
                            "0", "--min-iters", "2", "--cold-start-runs", "0", "--in-process", "--no-parity",
                            "--json", js], capsys)
    assert err == "" and lines == [f"wrote {js}"] and js.is_file()
