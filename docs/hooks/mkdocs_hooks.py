"""MkDocs hooks: the generated pages, and the repository files the manual links to.

- ``cli.md`` is generated from the typer app (``cli_reference.render``); nothing generated is committed.
- The README is the site's home page (``index.md``), so the two never disagree.
- ``layout.md``'s module index is generated from the package's module docstrings.
- The Markdown files link to repository files by their real relative paths (``../benchmarks/...``), so
  they work on a forge and in a checkout. Those files are published under ``repo/`` and the links
  are rewritten to them, so they work in the built site too.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

import cli_reference
import module_index

REPO_PREFIX = "repo/"
RESULTS = ("benchmarks/results/*.md", "train/results/*.md")
# Published even when no page links to them: the recorded results and the folder READMEs in the nav.
ALWAYS_PUBLISHED = ("train/README.md", "benchmarks/README.md", *RESULTS)
MODULE_INDEX_MARKER = "<!-- module-index -->"
RESULTS_MARKER = "<!-- recorded-results -->"
_LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^([ \t]*(?:```|~~~))", re.M)


def repo_root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def relative_links(markdown: str) -> list[str]:
    """Targets of inline links and images outside fenced code, without their #anchor."""
    out = []
    for i, chunk in enumerate(_FENCE.split(markdown)):
        if i % 4 == 0:  # split keeps the fence marker: text, marker, code, marker, text...
            out += [m.group(2) for m in _LINK.finditer(chunk)]
    return [t.split("#")[0] for t in out if is_relative(t) and t.split("#")[0]]


def is_relative(target: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", target, re.I)


def site_uri(path: Path, root: Path, docs: Path) -> str | None:
    """Where a repository file lives in the site: docs/X -> X, README.md -> index.md, else repo/X."""
    if path.is_relative_to(docs):
        return path.relative_to(docs).as_posix()
    if path == root / "README.md":
        return "index.md"
    if path.is_relative_to(root) and path.is_file():
        return REPO_PREFIX + path.relative_to(root).as_posix()
    return None


def recorded_results(root: Path, docs: Path) -> str:
    """A list of every recorded results file, by its title, linked from a page in docs/."""
    lines = []
    for path in (p for pattern in RESULTS for p in sorted(root.glob(pattern)) if p.name != "README.md"):
        title = next((ln[2:].strip() for ln in path.read_text().splitlines() if ln.startswith("# ")), path.stem)
        rel = Path(os.path.relpath(path, docs)).as_posix()
        lines.append(f"- [{title.replace('`', '')}]({rel}) (`{path.relative_to(root).as_posix()}`)")
    return "\n".join(lines)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    root, docs = repo_root(config), Path(config.docs_dir).resolve()
    files.append(File.generated(config, "cli.md", content=cli_reference.render()))
    files.append(File.generated(config, "index.md", abs_src_path=str(root / "README.md")))
    queue = [Path(f.abs_src_path) for f in files.documentation_pages() if f.abs_src_path]
    queue += [p for pattern in ALWAYS_PUBLISHED for p in sorted(root.glob(pattern))]
    seen: set[Path] = set()
    while queue:
        path = queue.pop().resolve()
        if path in seen or not path.is_file():  # a broken link: mkdocs --strict reports it
            continue
        seen.add(path)
        uri = site_uri(path, root, docs)
        if uri and uri.startswith(REPO_PREFIX) and files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
        if path.suffix == ".md":
            queue += [(path.parent / t).resolve() for t in relative_links(path.read_text())]
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root, docs = repo_root(config), Path(config.docs_dir).resolve()
    if page.file.src_uri == "layout.md":
        index = module_index.render(root / "bonedeploy", module_index.ranked_packages(markdown))
        markdown = markdown.replace(MODULE_INDEX_MARKER, index)
    if RESULTS_MARKER in markdown:
        markdown = markdown.replace(RESULTS_MARKER, recorded_results(root, docs))
    if not page.file.abs_src_path:
        return markdown
    here = Path(page.file.abs_src_path).resolve().parent
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(m: re.Match) -> str:
        target = m.group(2)
        if not is_relative(target):
            return m.group(0)
        path_part, sep, anchor = target.partition("#")
        uri = site_uri((here / path_part).resolve(), root, docs) if path_part else None
        if uri is None:
            return m.group(0)
        new = posixpath.relpath(uri, page_dir or ".") + sep + anchor
        return m.group(1) + new + m.group(3)

    parts = _FENCE.split(markdown)
    for i in range(0, len(parts), 4):
        parts[i] = _LINK.sub(rewrite, parts[i])
    return "".join(parts)

