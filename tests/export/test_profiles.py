"""Export profiles, from the library: packaged TOML recipes, ./export overrides, and
``export_config`` merging a profile with the caller's settings (what ``export --profile`` does)."""

from pathlib import Path

import pytest

from bonedeploy.errors import ConfigError
from bonedeploy.eval.parity import GATES
from bonedeploy.export import export_config
from bonedeploy.export.results import ExportConfig
from bonedeploy.export.tensorrt import DEFAULT_WORKSPACE_MB, BatchProfile


def test_profiles_parse_and_match_their_purpose():
    from bonedeploy.export.profiles import available_profiles, load_profile

    assert set(available_profiles()) >= {"edge-cpu", "jetson", "server-gpu"}
    edge, jetson, server = (load_profile(n) for n in ("edge-cpu", "jetson", "server-gpu"))
    assert edge["precision"] == "int8" and edge["trt"] is False
    assert jetson["engine_from"] == "fp16" and int(jetson["batch"].split(",")[2]) <= 8
    assert server["engine_from"] == "fp16" and server["batch"].split(",")[2] == "128"


PROFILES = {"edge-cpu", "jetson", "server-gpu"}


def test_profiles_ship_in_the_package_whatever_the_current_directory(tmp_path, monkeypatch):
    from bonedeploy.export.profiles import available_profiles, load_profile

    monkeypatch.chdir(tmp_path)  # empty: no ./export, no repository around
    found = available_profiles()
    assert set(found) == PROFILES
    assert all(Path(str(f)).parent.parts[-3:] == ("bonedeploy", "export", "profiles") for f in found.values())
    assert load_profile("edge-cpu")["precision"] == "int8"


def test_a_profile_in_the_current_directory_overrides_by_name(tmp_path, monkeypatch):
    from bonedeploy.export.profiles import available_profiles, load_profile

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "jetson.toml").write_text('precision = ["fp16"]\nbatch = [1, 2, 4]\n')
    (tmp_path / "export" / "lab.toml").write_text('trt = false\n')
    monkeypatch.chdir(tmp_path)
    assert set(available_profiles()) == PROFILES | {"lab"}
    jetson = load_profile("jetson")
    assert (jetson["precision"], jetson["batch"]) == ("fp16", "1,2,4")
    assert jetson["path"] == str(tmp_path / "export" / "jetson.toml")
    assert load_profile("server-gpu")["batch"].endswith(",128")  # the others stay packaged


def test_export_config_applies_the_profile():
    edge = export_config("best.pt", "edge-cpu")
    assert (edge.precisions, edge.trt) == (("int8",), False)
    server = export_config(Path("run/best.pt"), "server-gpu")
    assert (server.batch, server.workspace_mb, server.engine_from) == (BatchProfile(1, 32, 128), 4096, "fp16")
    assert server.source == Path("run/best.pt")


def test_what_the_caller_gives_beats_the_profile_and_none_means_not_given():
    cfg = export_config("best.pt", "jetson", batch="1,2,4", precisions=["fp16"], engine_from=None, trt=None)
    assert cfg.batch == BatchProfile(1, 2, 4) and cfg.precisions == ("fp16",)
    assert cfg.engine_from == "fp16" and cfg.workspace_mb == 1024  # from the profile


def test_without_a_profile_the_config_keeps_its_own_defaults():
    assert export_config("best.pt") == ExportConfig(source=Path("best.pt"))
    assert export_config("best.pt", opset=None).workspace_mb == DEFAULT_WORKSPACE_MB


def test_gate_overrides_change_only_what_they_name():
    cfg = export_config("best.pt", gates={"int8": {"max_accuracy_drop": 0.05, "min_top1_agreement": None}})
    assert cfg.gates["int8"] == GATES["int8"].with_(max_accuracy_drop=0.05)
    assert cfg.gates["fp16"] == GATES["fp16"]


@pytest.mark.parametrize("kwargs, says", [
    ({"precision": "fp32"}, "unknown settings ['precision']; valid: batch, calib,"),
    ({"gates": {"bf16": {"max_abs_dprob": 1.0}}}, "no parity gate for precision 'bf16'; valid: fp32, fp16, int8"),
    ({"precisions": "fp32,bf16"}, "valid precisions: fp32, fp16, int8"),
])
def test_bad_settings_name_the_valid_ones(kwargs, says):
    with pytest.raises(ConfigError, match=r".*") as info:
        export_config("best.pt", **kwargs)
    assert says in str(info.value)


def test_a_profile_file_with_an_unknown_key_names_it(tmp_path):
    bad = tmp_path / "lab.toml"
    bad.write_text('precision = ["fp32"]\nworkspace = 512\n')
    with pytest.raises(ConfigError, match="unknown keys \\['workspace'\\]; valid keys: description, precision"):
        export_config("best.pt", str(bad))
