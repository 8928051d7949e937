"""Export profiles: named TOML recipes (``export/*.toml`` in the repository) for a target device.

A profile sets defaults for ``bonedeploy export`` options; options given on the command line win.
Keys (all optional): ``description``, ``precision`` (list or "fp32,fp16"), ``trt`` (bool),
``engine_from``, ``batch`` ([min, opt, max] or "1,8,32"), ``workspace_mb``, ``opset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bonedeploy.errors import ConfigError

KEYS = ("description", "precision", "trt", "engine_from", "batch", "workspace_mb", "opset")


def profile_dirs() -> list[Path]:
    """Where ``--profile NAME`` looks: ./export, then the repository's export/ folder."""
    repo = Path(__file__).resolve().parents[2] / "export"
    dirs = [Path.cwd() / "export", repo]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def available_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(profile_dirs()):  # the first directory wins
        if d.is_dir():
            found.update({p.stem: p for p in sorted(d.glob("*.toml"))})
    return dict(sorted(found.items()))


def load_profile(name_or_path: str) -> dict[str, Any]:
    """The profile's settings (validated keys); a path to a .toml file works as well as a name."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as e:
            raise ConfigError(f"{path}: reading export profiles needs Python >= 3.11 or the "
                              "'tomli' package") from e
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a readable TOML profile ({e})") from e
