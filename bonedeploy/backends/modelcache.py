"""Compiled-model caches keyed by the artefact's sha256, so a restart does not recompile.

A runtime's cache lives in ``<cache root>/<runtime>/<sha256[:24]>-<runtime version>/``
beside a ``manifest.json`` naming the artefact, its full sha256 and the runtime version. A
directory whose manifest is missing, unreadable or names another artefact/version is stale:
it is wiped and rebuilt, never trusted. Hashing a large artefact on every start would cost
what the cache saves, so the sha256 is remembered per (real path, size, mtime_ns) and recomputed
whenever the file changes.

The cache root is ``$BONEDEPLOY_CACHE_DIR``, else ``$XDG_CACHE_HOME/bonedeploy``, else
``~/.cache/bonedeploy``; ``BONEDEPLOY_CACHE_DIR=off`` disables caching. ``cache_root`` is the
one place that rule lives: every cache of bonedeploy (these, onnxruntime's TensorRT engines,
TensorRT's timing cache) asks it, through ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "BONEDEPLOY_CACHE_DIR"
OFF = ("off", "0", "none", "")
MANIFEST = "manifest.json"
FORMAT = "bonedeploy.modelcache/1"


def cache_root() -> Path | None:
    """Where caches live; None when caching is switched off."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bonedeploy"


def cache_dir(name: str) -> Path | None:
    """``<cache root>/<name>`` (not created); None when caching is switched off."""
    root = cache_root()
    return None if root is None else root / name


def artefact_sha256(path: str | Path, root: Path | None = None) -> str:
    """The file's sha256, remembered per (real path, size, mtime_ns) under the cache root."""
    from bonedeploy.util.fs import sha256_file, write_json

    path = Path(path).resolve()
    st = path.stat()
    stamp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    root = root if root is not None else cache_root()
    if root is None:
        return sha256_file(path)
    memo = root / "sha256" / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    try:
        known = json.loads(memo.read_text())
        if {k: known.get(k) for k in stamp} == stamp and len(known.get("sha256", "")) == 64:
            return known["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    sha = sha256_file(path)
    try:
        write_json(memo, {**stamp, "sha256": sha})
    except OSError:
        pass  # a read-only cache only costs the hashing next time
    return sha


@dataclass(frozen=True)
class CacheDir:
    """One artefact's cache for one runtime version; ``extra`` is what the caller keeps with it
    (e.g. the model card, so a warm start need not parse the model to read it)."""

    path: Path
    identity: dict[str, str]
    fresh: bool  # True: just (re)created, nothing cached yet
    extra: dict[str, Any]
    rebuilt_because: str | None = None

    def save(self, **extra: Any) -> None:
        from bonedeploy.util.fs import write_json

        write_json(self.path / MANIFEST, {"format": FORMAT, **self.identity, "extra": extra})

    def wipe(self, why: str) -> "CacheDir":
        """Empty the directory (e.g. the runtime refused a cached blob) and start again."""
        _reset(self.path)
        return CacheDir(self.path, self.identity, True, {}, why)


def open_cache(artefact: str | Path, runtime: str, version: str,
               root: Path | None = None) -> CacheDir | None:
    """The cache directory for ``artefact`` under ``runtime``/``version``, checked against its
    manifest (a stale one is emptied); None when caching is off or the root is not writable."""
    root = root if root is not None else cache_root()
    if root is None:
        return None
    try:
        sha = artefact_sha256(artefact, root)
        identity = {"artefact": str(Path(artefact).resolve()), "sha256": sha, "runtime": runtime,
                    "version": version}
        d = root / runtime / f"{sha[:24]}-{_safe(version)}"
        why = _stale(d, identity)
        if why is None:
            return CacheDir(d, identity, False, dict(json.loads((d / MANIFEST).read_text())["extra"]))
        _reset(d)
        return CacheDir(d, identity, True, {}, why if why != "new" else None)
    except OSError:
        return None


def _stale(d: Path, identity: dict[str, str]) -> str | None:
    """None when the directory's manifest matches; else why it cannot be trusted."""
    if not d.is_dir():
        return "new"
    try:
        m = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest (an interrupted build)"
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("extra"), dict):
        return "manifest of another format"
    for k, v in identity.items():
        if k != "artefact" and m.get(k) != v:
            return f"manifest {k} {str(m.get(k))[:16]!r} != {v[:16]!r}"
    return None


def _reset(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)[:48]
