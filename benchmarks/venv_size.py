"""How big is the edge install? The wheel in a fresh venv with the base dependencies only.

Builds the wheel (``pip wheel --no-deps``), creates a fresh venv, installs the wheel (pip fetches
the dependencies from the index as usual; ``--extras report`` adds extras), then measures the
venv on disk with ``du``: site-packages and the whole venv, plus the largest installed
distributions (the sizes of the files each one's RECORD lists). Target: base venv <= 240 MB.

Writes ``benchmarks/results/venv_size-<machine>.{md,json}`` with the command.

    python benchmarks/venv_size.py                 # base install
    python benchmarks/venv_size.py --extras report --no-write
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET_MB = 240

# Runs inside the measured venv: bytes per installed distribution, from its RECORD.
_SIZES = """
import json, os
from importlib.metadata import distributions
out = {}
for d in distributions():
    total = 0
    for f in d.files or []:
        p = d.locate_file(f)
        if os.path.isfile(p):
            total += os.path.getsize(p)
    out[d.metadata["Name"]] = total
print(json.dumps(out))
"""


def du_bytes(path: Path) -> int:
    """Disk usage as ``du`` reports it (allocated blocks, what the edge box's disk loses)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) * 1024


def build_venv(work: Path, extras: str | None) -> tuple[Path, Path, float]:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
                    str(work / "dist"), str(REPO)], check=True)
    wheel = next((work / "dist").glob("bonedeploy-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = f"bonedeploy[{extras}] @ {wheel.as_uri()}" if extras else str(wheel)
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", target], check=True)
    return venv, wheel, time.perf_counter() - t0


def measure(venv: Path) -> dict:
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", _SIZES], capture_output=True,
                                      text=True, check=True).stdout)
    return {"venv_bytes": du_bytes(venv), "site_packages_bytes": du_bytes(site),
            "distributions": dict(sorted(sizes.items(), key=lambda kv: -kv[1]))}


def render(report: dict, top: int) -> str:
    mb = lambda b: f"{b / 1e6:.0f}"  # noqa: E731
    verdict = "met" if report["venv_bytes"] / 1e6 <= TARGET_MB else "NOT met"
    lines = [f"# venv_size on {report['machine_slug']}", "", f"`{report['command']}`", "",
             f"Wheel `{report['wheel']}` installed into a fresh venv "
             f"({'extras: ' + report['extras'] if report['extras'] else 'base install, no extras'}; "
             f"Python {report['python']}; install {report['install_s']:.0f} s).", "",
             "| measured (du) | MB |", "|---|---:|",
             f"| whole venv | {mb(report['venv_bytes'])} |",
             f"| site-packages | {mb(report['site_packages_bytes'])} |", "",
             f"Target whole venv <= {TARGET_MB} MB: {verdict}.", "",
             f"## Largest distributions (files in their RECORD, top {top})", "",
             "| distribution | MB |", "|---|---:|"]
    lines += [f"| {name} | {b / 1e6:.1f} |" for name, b in list(report["distributions"].items())[:top]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extras", help="Comma-separated extras to add, e.g. report (default: none).")
    ap.add_argument("--top", type=int, default=12, help="Distributions listed in the table.")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="Print only.")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from bonedeploy.util.fs import write_json, write_text
    from bonedeploy.util.machine import machine_info, machine_slug

    with tempfile.TemporaryDirectory(prefix="venv_size-") as tmp:
        venv, wheel, install_s = build_venv(Path(tmp), args.extras)
        sizes = measure(venv)
    info = machine_info()
    report = {"benchmark": "venv_size",
              "command": shlex.join(["python", "benchmarks/venv_size.py", *(argv or sys.argv[1:])]),
              "extras": args.extras, "wheel": wheel.name, "python": sys.version.split()[0],
              "install_s": install_s, "target_mb": TARGET_MB, **sizes, "machine_slug": machine_slug(info),
              "machine": info}
    text = render(report, args.top)
    print(text)
    if not args.no_write:
        suffix = f"-{args.extras.replace(',', '-')}" if args.extras else ""
        stem = args.results_dir / f"venv_size{suffix}-{machine_slug(info)}"
        write_json(stem.with_suffix(".json"), report)
        write_text(stem.with_suffix(".md"), text)
        print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
