"""The manual agrees with the code: the generated CLI reference lists exactly the app's commands and
options, every `bonedeploy ...` line in the manual uses real ones, links resolve, the README stays
short and keeps its two commands, the extras table matches pyproject.toml, and the layout page
names every package. The site itself builds with ``mkdocs build --strict`` where mkdocs is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import typer.main

from bonedeploy.cli.app import app

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# Every Markdown file of the manual: the site's pages and the folder READMEs it publishes.
MANUAL = [README, *sorted(DOCS.glob("*.md")), ROOT / "train/README.md", ROOT / "train/results/README.md",
          ROOT / "benchmarks/README.md", ROOT / "export/README.md"]
TWO_COMMANDS = (
    "```bash\n"
    'python3 -m venv .venv && .venv/bin/pip install -e ".[all]" && .venv/bin/bonedeploy demo   # the main job\n'
    ".venv/bin/python -m pytest -q                                                              # the tests\n"
    "```\n"
)
README_MAX_BYTES = 12 * 1024


def hooks(name: str):
    """A module of docs/hooks/ (they import each other by plain name, as MkDocs loads them)."""
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCS / "hooks"))


# --- the CLI reference ------------------------------------------------------------------------

def app_tree() -> dict[str, set[str]]:
    """Section id -> every option string and argument name, read from the click tree typer builds."""
    root = typer.main.get_command(app)

    def names(cmd) -> set[str]:
        out: set[str] = set()
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            out |= {p.name.upper()} if p.param_type_name == "argument" else {*p.opts, *p.secondary_opts}
        return out

    tree = {"global-options": names(root)}
    tree.update({n: names(c) for n, c in root.commands.items() if not getattr(c, "hidden", False)})
    return tree


def documented(page: str) -> dict[str, set[str]]:
    """Section id -> the names in the first column of its tables, read back from the Markdown."""
    out: dict[str, set[str]] = {}
    for section in re.split(r"^## ", page, flags=re.M)[1:]:
        anchor = re.search(r"\{#([\w-]+)\}", section.splitlines()[0])
        assert anchor, f"section without an id: {section.splitlines()[0]!r}"
        cells = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
        out[anchor.group(1)] = {n.strip().removesuffix("...") for c in cells for n in re.split(r"[,/]", c)}
    return out


def differences(page: str, tree: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """(in the app but not on the page, on the page but not in the app), as 'command option'."""
    doc = documented(page)
    missing = [f"{c} {o}" for c in tree for o in sorted(tree[c] - doc.get(c, set()))]
    missing += [f"{c} (whole command)" for c in tree if c not in doc]
    unknown = [f"{c} {o}" for c in doc for o in sorted(doc[c] - tree.get(c, set()))]
    unknown += [f"{c} (whole command)" for c in doc if c not in tree]
    return missing, unknown


def test_cli_reference_lists_exactly_the_apps_commands_and_options():
    tree = app_tree()
    assert {"infer", "serve", "export"} <= tree.keys() and "--engine" in tree["infer"]
    missing, unknown = differences(hooks("cli_reference").render(), tree)
    assert not missing, f"in the app, not in the CLI reference: {missing}"
    assert not unknown, f"in the CLI reference, not in the app: {unknown}"


def test_the_reference_check_sees_a_dropped_or_invented_option():
    page = hooks("cli_reference").render()
    tree = app_tree()
    dropped = "\n".join(ln for ln in page.splitlines() if not ln.startswith("| `--resume`"))
    assert "infer --resume" in differences(dropped, tree)[0]
    invented = page.replace("## `bonedeploy serve` {#serve}\n",
                            "## `bonedeploy serve` {#serve}\n\n| `--bogus` | | | |\n")
    assert differences(invented, tree)[1] == ["serve --bogus"]
    renamed = page.replace("{#calibrate}", "{#calibration}")
    missing, unknown = differences(renamed, tree)
    assert "calibrate (whole command)" in missing and "calibration (whole command)" in unknown


def toy_app() -> typer.Typer:
    """A two-command app whose reference rows are known exactly."""
    toy = typer.Typer(rich_markup_mode="rich")

    @toy.callback()
    def root(verbose: bool = typer.Option(False, "--verbose", help="Say more.")) -> None:
        """Toy: the root help."""

    @toy.command("run")
    def run(
        inputs: list[Path] = typer.Argument(..., help="Files *and* folders."),
        engine: Path = typer.Option(..., "--engine", "-e", help="model.onnx or a [bold]URL[/bold]."),
        batch: int = typer.Option(16, "--batch-size", "-b", help="Images per call.", show_default=True),
        isolate: bool = typer.Option(True, "--isolate/--in-process", help="Own process."),
        secret: bool = typer.Option(False, "--secret", hidden=True),
    ) -> None:
        """Run it.

        Writes p_<class> per row.

        Exit codes:
        0  ok
        3  some failed"""

    @toy.command("gone", hidden=True)
    def gone() -> None:
        """Hidden."""

    return toy


def test_reference_rows_show_names_values_defaults_and_escaped_help():
    page = hooks("cli_reference").render(toy_app())
    run = page[page.index("{#run}"):]
    assert "```text\nbonedeploy run [OPTIONS] INPUTS...\n```" in run
    assert "| `INPUTS...` | `<path>` | required | Files \\*and\\* folders. |" in run
    assert "| `--engine, -e` | `<path>` | required | model.onnx or a URL. |" in run  # rich markup applied
    assert "| `--batch-size, -b` | `<int>` | 16 | Images per call. |" in run
    assert "| `--isolate / --in-process` |  | --isolate | Own process. |" in run
    assert "Writes p\\_&lt;class&gt; per row." in run  # Markdown/HTML-escaped outside code spans
    assert "Exit codes:  \n0  ok  \n3  some failed" in run  # a list keeps its lines
    assert "--secret" not in page and "{#gone}" not in page
    assert "| `--verbose` |  |  | Say more. |" in page[page.index("{#global-options}"):page.index("{#run}")]


# --- commands quoted in the manual -------------------------------------------------------------

def quoted_invocations(text: str) -> list[str]:
    """`bonedeploy ...` lines of bash blocks and `bonedeploy ...` code spans, without comments."""
    lines: list[str] = []
    for lang, body in re.findall(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, flags=re.M | re.S):
        if lang in ("bash", "sh", "shell"):
            lines += body.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.M | re.S)
    lines += re.findall(r"`(bonedeploy [^`]+)`", prose)
    calls = []
    for line in lines:
        line = re.sub(r"\s#.*", "", line)
        for part in re.split(r"&&|;|\|", line):
            words = part.split()
            while words and re.match(r"^\w+=", words[0]):  # VAR=value prefixes
                words.pop(0)
            if words and words[0] in ("bonedeploy", ".venv/bin/bonedeploy"):
                calls.append(" ".join(words))
    return calls


def unknown_usage(call: str, tree: dict[str, set[str]]) -> str | None:
    """Why ``call`` is not a valid use of the app (an unknown command or option), else None."""
    words = shlex.split(call.replace("…", ""))[1:]
    glob_opts = tree["global-options"] | {"--help"}
    while words and words[0].startswith("-"):
        if words[0] not in glob_opts:
            return f"unknown global option {words[0]}"
        words.pop(0)
    if not words or words[0].isupper():  # `bonedeploy COMMAND --help`: a placeholder
        return None
    cmd = words[0]
    if cmd not in tree:
        return f"unknown command {cmd!r}"
    for w in words[1:]:
        if w == "--":
            break
        name = w.split("=")[0]
        if name.startswith("-") and len(name) > 1 and name not in tree[cmd] | {"--help"}:
            return f"{cmd} has no option {name}"
    return None


def test_every_bonedeploy_command_quoted_in_the_manual_exists():
    tree = app_tree()
    calls = [(p, c) for p in MANUAL for c in quoted_invocations(p.read_text())]
    assert len(calls) > 50, "the manual's commands were not found"
    bad = [f"{p.relative_to(ROOT)}: {c}  ({why})" for p, c in calls if (why := unknown_usage(c, tree))]
    assert not bad, "\n".join(bad)


def test_the_usage_check_refuses_unknown_commands_and_options():
    tree = app_tree()
    calls = quoted_invocations("```bash\nbonedeploy infer --engine m.onnx x/ --bogus 1   # --also-bogus\n"
                               "X=1 bonedeploy deploy m.onnx && bonedeploy bench --select\n```\n"
                               "and `bonedeploy serve m.onnx --max-batch 8` in prose\n")
    assert [unknown_usage(c, tree) for c in calls] == [
        "infer has no option --bogus", "unknown command 'deploy'", None, None]


# --- links, size, extras, layout ---------------------------------------------------------------

def slug(heading: str) -> str:
    """Python-Markdown's toc slug of a heading's text (GitHub's agrees for these headings)."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(md: Path) -> set[str]:
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", md.read_text(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.M)}


def broken_links(md: Path) -> list[str]:
    links = hooks("mkdocs_hooks")
    text = md.read_text()
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.M | re.S)):
        if not links.is_relative(target) and not target.startswith("#"):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no such heading")
    return bad


@pytest.mark.parametrize("md", MANUAL, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md):
    assert md.exists()
    assert not broken_links(md)


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Its part\n\n[ok](a.md#its-part) [ok](#a-page) "
                                   "[web](https://example.org/x.md)\n\n```bash\n[not a link](nowhere.md)\n```\n")
    (tmp_path / "b.md").write_text("[gone](c.md) [no heading](a.md#elsewhere)\n")
    assert broken_links(tmp_path / "a.md") == []
    assert broken_links(tmp_path / "b.md") == ["c.md: no such file", "a.md#elsewhere: no such heading"]


def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text()
    assert len(text.encode()) <= README_MAX_BYTES, f"README.md is {len(text.encode())} bytes"
    assert TWO_COMMANDS in text


def test_extras_table_matches_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    rows = dict(re.findall(r"^\| `\[(\w+)\]` \|.*\| (.+) \|$", README.read_text(), flags=re.M))
    assert set(rows) == set(extras), "README's extras table vs pyproject.toml"
    (all_spec,) = extras["all"]
    in_pyproject = set(re.search(r"\[(.+)\]", all_spec).group(1).split(","))
    in_readme = set(re.search(r"`\[([\w,]+)\]`", rows["all"]).group(1).split(","))
    assert in_readme == in_pyproject


def test_layout_page_ranks_every_package_as_test_layout_enforces():
    module_index = hooks("module_index")
    page_ranks = module_index.ranks((DOCS / "layout.md").read_text())
    present = set(module_index.top_level(ROOT / "bonedeploy"))
    assert set(page_ranks) == present, (f"not on the layout page: {present - set(page_ranks)}; "
                                        f"on it but gone: {set(page_ranks) - present}")
    spec = importlib.util.spec_from_file_location("layout_rules", ROOT / "tests" / "test_layout.py")
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    assert page_ranks == rules.RANKS, "docs/layout.md's rank table vs tests/test_layout.py's RANKS"
    index = module_index.render(ROOT / "bonedeploy", list(page_ranks))
    assert index.index("### `util/`") < index.index("### `backends/`") < index.index("### `cli/`")
    assert "| `onnxrt.py` |" in index


# --- the site -----------------------------------------------------------------------------------

def test_site_builds_strict_with_the_generated_pages(tmp_path):
    pytest.importorskip("mkdocs", reason="the [docs] extra builds the site")
    pytest.importorskip("material", reason="the [docs] extra builds the site")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(site)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    cli = (site / "cli" / "index.html").read_text()
    for name in app_tree():
        assert f'id="{name}"' in cli
    home = (site / "index.html").read_text()
    assert 'href="guide/#the-edge-install"' in home  # README links rewritten to the site's pages
    assert (site / "repo" / "benchmarks" / "results" / "cpu-epyc-2core" / "index.html").exists()
