"""``bonedeploy sweep --devices``: the option reaches the config as a device list, refusals are one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bonedeploy.cli.app import app
from bonedeploy.errors import ConfigError

pytest.importorskip("torch")


def test_devices_reach_the_sweep_config_as_a_list(monkeypatch):
    got = []
    monkeypatch.setattr("bonedeploy.training.sweep.run_sweep", lambda cfg, **kw: got.append(cfg) or 1 / 0)
    CliRunner().invoke(app, ["sweep", "r.toml", "data", "--devices", "0,1,3"])
    assert got[0].devices == ("0", "1", "3")
    CliRunner().invoke(app, ["sweep", "r.toml", "data", "--devices", "cpu"])
    assert got[1].devices == ("cpu",)


def test_a_device_list_with_cpu_in_it_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setattr("bonedeploy.training.sweep.run_sweep", lambda *a, **k: pytest.fail("ran"))
    r = CliRunner().invoke(app, ["sweep", "r.toml", "data", "--devices", "0,cpu"])
    assert r.exit_code == 1 and isinstance(r.exception, ConfigError) and "not both" in str(r.exception)
