"""Where the math runs: ``--precision auto`` picks bf16 only where the hardware computes in bf16."""

import pytest

from bonedeploy.training import resolve_runtime
from bonedeploy.util import machine


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(names))
    return set_flags


@pytest.mark.parametrize("cpu_flags, expected", [
    (("avx512f", "avx512_vnni"), "fp32"),        # bf16 would be emulated: slower than fp32
    (("avx512f", "avx512_bf16"), "bf16"),        # AMD Zen 4, Intel Cooper Lake
    (("amx_tile", "amx_bf16"), "bf16"),          # Intel Sapphire Rapids
])
def test_auto_precision_on_the_cpu_follows_native_bf16(flags, cpu_flags, expected):
    flags(*cpu_flags)
    assert resolve_runtime("cpu", "auto", None, False).precision == expected


def test_deterministic_runs_and_explicit_choices_are_kept(flags):
    flags("avx512_bf16")
    assert resolve_runtime("cpu", "auto", None, True).precision == "fp32"
    assert resolve_runtime("cpu", "fp32", None, False).precision == "fp32"
    flags()
    assert resolve_runtime("cpu", "bf16", None, False).precision == "bf16"


def test_cpu_flags_reads_this_machine():
    found = machine.cpu_flags()
    assert isinstance(found, frozenset)
    assert machine.native_bf16_cpu() == bool(found & {"avx512_bf16", "amx_bf16"})
