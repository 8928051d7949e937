"""Export profiles: named TOML recipes for a target device, shipped inside the package
(``bonedeploy/export/profiles/*.toml``, so a wheel install has them).

A TOML file of the same name in ``./export/`` (the current directory) overrides a packaged one,
and adds new names; a path to any ``.toml`` file works as well as a name. A profile sets defaults
for an export; what the caller gives (``export_config``'s overrides, the command line's options)
wins, and what neither sets is ``ExportConfig``'s own default.
Keys (all optional): ``description``, ``precision`` (list or "fp32,fp16"), ``trt`` (bool),
``engine_from``, ``batch`` ([min, opt, max] or "1,8,32"), ``workspace_mb``, ``opset``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bonedeploy.errors import ConfigError

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

    from bonedeploy.export.results import ExportConfig

KEYS = ("description", "precision", "trt", "engine_from", "batch", "workspace_mb", "opset")
# Profile key -> the ExportConfig field it sets (the others are named alike).
FIELDS = {"precision": "precisions"}
SUFFIX = ".toml"


def packaged_dir() -> Traversable:
    return files(__name__)  # the TOML files ship inside this package


def profile_dirs() -> list[Traversable]:
    """Where ``--profile NAME`` looks, first match wins: ./export, then the packaged profiles."""
    return [Path.cwd() / "export", packaged_dir()]


def available_profiles() -> dict[str, Traversable]:
    """Profile name -> file, over every folder of ``profile_dirs`` (the first one wins a name)."""
    found: dict[str, Traversable] = {}
    for d in reversed(profile_dirs()):
        if d.is_dir():
            found.update({e.name[:-len(SUFFIX)]: e for e in sorted(d.iterdir(), key=lambda e: e.name)
                          if e.name.endswith(SUFFIX) and e.is_file()})
    return dict(sorted(found.items()))


def load_profile(name_or_path: str) -> dict[str, Any]:
    """The profile's settings (validated keys); a path to a .toml file works as well as a name."""
    path: Traversable = Path(name_or_path)
    if not (path.name.endswith(SUFFIX) and path.is_file()):
        profiles = available_profiles()
        if name_or_path not in profiles:
            raise ConfigError(f"unknown export profile {name_or_path!r}; available: "
                              f"{', '.join(profiles) or 'none found'} (searched "
                              f"{', '.join(str(d) for d in profile_dirs())})")
        path = profiles[name_or_path]
    data = _read_toml(path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {', '.join(KEYS)}")
    if isinstance(data.get("precision"), list):
        data["precision"] = ",".join(map(str, data["precision"]))
    if isinstance(data.get("batch"), list):
        data["batch"] = ",".join(map(str, data["batch"]))
    data["path"] = str(path)
    return data


def _read_toml(path: Traversable) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as e:
            raise ConfigError(f"{path}: reading export profiles needs Python >= 3.11 or the "
                              "'tomli' package") from e
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a readable TOML profile ({e})") from e


def export_config(source: str | Path, profile: str | None = None, *,
                  gates: Mapping[str, Mapping[str, float]] | None = None, **overrides: Any) -> ExportConfig:
    """The ``ExportConfig`` for ``source``: ``profile``'s settings (a name or a .toml path), then
    ``overrides`` (ExportConfig fields; None means not given), then ``gates`` ({precision: {Gate
    field: value}}) over the default parity gates.

    ``precisions`` may be "fp32,int8" or a sequence, ``batch`` "1,8,32", a sequence or a
    BatchProfile: the forms a profile and a command line use.
    """
    from dataclasses import fields

    from bonedeploy.eval.parity import GATES
    from bonedeploy.export.results import ExportConfig
    from bonedeploy.export.tensorrt import BatchProfile

    valid = {f.name for f in fields(ExportConfig)} - {"source", "gates"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"export_config: unknown settings {unknown}; valid: {', '.join(sorted(valid))}")
    prof = load_profile(profile) if profile else {}
    settings = {FIELDS.get(k, k): v for k, v in prof.items() if k not in ("description", "path")}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings.get("precisions") is not None:
        settings["precisions"] = _names(settings["precisions"])
    if settings.get("batch") is not None and not isinstance(settings["batch"], BatchProfile):
        settings["batch"] = BatchProfile.parse(_text(settings["batch"]))
    merged = dict(GATES)
    for prec, changes in (gates or {}).items():
        if prec not in merged:
            raise ConfigError(f"no parity gate for precision {prec!r}; valid: {', '.join(merged)}")
        merged[prec] = merged[prec].with_(**{k: v for k, v in changes.items() if v is not None})
    return ExportConfig(source=Path(source), gates=merged, **settings)


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(s.strip().lower() for s in _text(value).split(",") if s.strip())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ",".join(map(str, value))
