"""Every ```python block in docs/ and README.md runs, page by page.

The blocks of one page run in order, in one fresh interpreter (so later blocks see what
earlier ones defined), in a temporary working directory, with a timeout. Tracebacks point
at the Markdown file and line. Markers (documented in docs/contributing-docs.md):

- ``<!-- skip-next: reason -->`` on the line before a fence: that block is not run. Kept rare;
  the number of skips is capped below so that they cannot spread quietly.

Every page runs with ``JUST_DISTRIBUTE_ADDRESS`` set to the session's function service (the
``cluster_service`` fixture): ``job="cluster"`` examples connect to it instead of each starting
an embedded cluster of their own, which costs seconds per page.

Fences other than ```python (```text, ```pycon, ```bash, ```mermaid, ...) are not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE_TIMEOUT = 150  # seconds for all blocks of one page
MAX_SKIPS = 8

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_SKIP = re.compile(r"<!--\s*skip-next(?::\s*(?P<reason>.*?))?\s*-->")


@dataclass
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    skipped: str | None  # the skip reason, when marked


def extract_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` (any language), with its line and skip marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending_skip: str | None = None
    i = 0
    while i < len(lines):
        text = lines[i]
        skip = _SKIP.search(text)
        if skip:
            pending_skip = skip.group("reason") or "marked skip-next"
            i += 1
            continue
        m = _FENCE.match(text)
        if not m:
            if text.strip():
                pending_skip = None if not text.strip().startswith("<!--") else pending_skip
            i += 1
            continue
        indent, ticks, lang = m.group("indent"), m.group("ticks"), m.group("info").lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(ticks) and set(stripped) <= {ticks[0]}:
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        else:
            raise AssertionError(f"{path}:{i + 1}: a ``` fence is never closed")
        blocks.append(Block(path, i + 2, lang, textwrap.dedent("\n".join(body)), pending_skip))
        pending_skip = None
        i = j + 1
    return blocks


def python_pages() -> list[Path]:
    """README.md and every page of docs/ that has at least one ```python block."""
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [p for p in pages if any(b.lang in {"python", "py"} for b in extract_blocks(p))]


def _runner(blocks: list[Block]) -> str:
    """A script that runs each block in ``__main__``, compiled under its Markdown position."""
    parts = [
        "import time as _time",
        "_t0 = _time.perf_counter()",
        "_ns = globals()",
    ]
    for b in blocks:
        # Padding with newlines makes traceback line numbers the Markdown line numbers.
        source = "\n" * (b.line - 1) + b.code + "\n"
        rel = b.path.relative_to(ROOT)
        parts.append(
            f"print({f'--- {rel}:{b.line} at'!r}, f'{{_time.perf_counter() - _t0:.1f}} s', "
            "flush=True)\n"
            f"exec(compile({source!r}, {str(rel)!r}, 'exec'), _ns)"
        )
    parts.append("print('--- all blocks ran', flush=True)")
    return "\n".join(parts) + "\n"


#: Signs in standard error of an example that runs but leaves a mess a user would see.
NOISE = ("Traceback (most recent call last)", "Task was destroyed", "Exception ignored")


def noise(stderr: str) -> list[str]:
    """The lines of ``stderr`` that show a traceback or an unclean shutdown."""
    return [line for line in stderr.splitlines() if any(sign in line for sign in NOISE)]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a docs or example subprocess: no inherited JUST_DISTRIBUTE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUST_DISTRIBUTE_")}
    env.update({"MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    env.update(extra or {})
    return env


def run_page(path: Path, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the executable blocks of ``path`` in a fresh interpreter inside ``tmp_path``."""
    blocks = [b for b in extract_blocks(path) if b.lang in {"python", "py"} and not b.skipped]
    script = tmp_path / "_page.py"
    script.write_text(_runner(blocks), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=PAGE_TIMEOUT,
    )


PAGES = python_pages()


@pytest.fixture(scope="module")
def docs_env(cluster_service: Any) -> dict[str, str]:
    """The environment of every page: clean, with the session's service as the cluster."""
    return clean_env({"JUST_DISTRIBUTE_ADDRESS": str(cluster_service.address)})


@pytest.mark.timeout(PAGE_TIMEOUT + 30)
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_blocks_run(page: Path, tmp_path: Path, docs_env: dict[str, str]) -> None:
    proc = run_page(page, tmp_path, docs_env)
    assert proc.returncode == 0, (
        f"{page.relative_to(ROOT)}: a code block failed\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-6000:]}"
    )
    assert proc.stdout.rstrip().endswith("--- all blocks ran")
    assert not noise(proc.stderr), (
        f"{page.relative_to(ROOT)} is noisy: {noise(proc.stderr)}\n--- stdout\n{proc.stdout}"
        f"\n--- stderr\n{proc.stderr[-8000:]}"
    )


def test_blocks_are_found_and_skips_stay_rare() -> None:
    blocks = [b for p in [ROOT / "README.md", *DOCS.rglob("*.md")] for b in extract_blocks(p)]
    python = [b for b in blocks if b.lang in {"python", "py"}]
    skipped = [f"{b.path.relative_to(ROOT)}:{b.line} ({b.skipped})" for b in python if b.skipped]
    assert len(python) >= 40, f"only {len(python)} python blocks found: is the parser broken?"
    assert len(skipped) <= MAX_SKIPS, "too many skipped blocks:\n" + "\n".join(skipped)
    for b in python:
        compile(b.code, f"{b.path}:{b.line}", "exec")  # even skipped blocks must parse


def test_extractor_handles_markers_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- skip-next: needs a GPU -->\n```python\n"
        "boom()\n```\n\n!!! note\n    ```python\n    y = x + 1\n    ```\n\n"
        "```text\nnot code\n```\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page)
    assert [(b.lang, b.line, b.code.strip(), b.skipped) for b in blocks] == [
        ("python", 4, "x = 1", None),
        ("python", 9, "boom()", "needs a GPU"),
        ("python", 14, "y = x + 1", None),
        ("text", 18, "not code", None),
    ]


def test_a_failing_block_is_reported_at_its_markdown_line(tmp_path: Path) -> None:
    page = tmp_path / "bad.md"
    page.write_text("# t\n\n```python\nok = 1\n```\n\n```python\nassert ok == 2\n```\n")
    blocks = [b for b in extract_blocks(page) if b.lang == "python"]
    for b in blocks:
        b.path = ROOT / "docs" / "bad.md"  # a path under ROOT, as real pages have
    (tmp_path / "_page.py").write_text(_runner(blocks), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "_page.py"], cwd=tmp_path, env=clean_env(), capture_output=True,
        text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert 'File "docs/bad.md", line 8' in proc.stderr


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _anchors(md: Path) -> set[str]:
    """The heading anchors mkdocs makes for ``md`` (the toc extension's default slugs)."""
    out = set()
    in_fence = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and line.startswith("#"):
            title = re.sub(r"`|\*|\[|\]\([^)]*\)", "", line.lstrip("#").strip())
            slug = re.sub(r"[^\w\s-]", "", title).strip().lower()
            out.add(re.sub(r"[-\s]+", "-", slug))
    return out


def test_readme_links_resolve() -> None:
    """README.md is not part of the site, so mkdocs cannot check its links: do it here."""
    readme = ROOT / "README.md"
    targets = [m.group("target") for m in _LINK.finditer(readme.read_text(encoding="utf-8"))]
    assert targets, "README.md links to no page of the docs"
    for target in targets:
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (ROOT / file) if file else readme
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"README.md links to #{anchor}, not in {file}"


def test_site_lists_every_env_variable_the_code_reads() -> None:
    config_src = (ROOT / "just_distribute" / "config.py").read_text(encoding="utf-8")
    names = set(re.findall(r'"([A-Z_]+)":\s*(?:str|int|float|lambda)', config_src))
    assert {"JOB", "WORKERS", "ADDRESS"} <= names
    page = (DOCS / "guide" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"JUST_DISTRIBUTE_{n}" not in page)
    assert not missing, f"docs/guide/configuration.md does not document: {missing}"


def test_no_registry_host_is_named() -> None:
    hosts = ["py" + "pi.org", "files.python" + "hosted.org", "anaconda" + ".org"]
    for path in [ROOT / "README.md", ROOT / "mkdocs.yml", *DOCS.rglob("*.md")]:
        text = path.read_text(encoding="utf-8").lower()
        found = [h for h in hosts if h in text]
        assert not found, f"{path.relative_to(ROOT)} names {found}"


def test_install_lines_never_install_the_earlier_line() -> None:
    """The index's ``just-distribute`` 0.1.x is another library: every documented install of
    the package by name asks for ``>=0.2``; README and the install page say how to tell."""
    by_name = re.compile(r"""pip install (?:--\S+ \S+ )*["']?just-distribute(?P<rest>[^\s"']*)""")
    for path in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        text = path.read_text(encoding="utf-8")
        for m in by_name.finditer(text):
            if path.name == "changelog.md":
                continue
            assert ">=0.2" in m.group("rest"), f"{path.relative_to(ROOT)}: {m.group(0)!r}"
    for path in (ROOT / "README.md", DOCS / "index.md"):
        text = path.read_text(encoding="utf-8")
        assert 'pip install ".[all]"' in text, path
        assert "0.1.x" in text and "just-distribute --version" in text, path
        assert "recipes/migrating.md#from-just-distribute-01x" in text, path
    assert "from-just-distribute-01x" in _anchors(DOCS / "recipes" / "migrating.md")


def test_reference_documents_every_public_name() -> None:
    import just_distribute

    page = (DOCS / "reference.md").read_text(encoding="utf-8")
    documented = {line.split(".")[-1].strip() for line in page.splitlines()
                  if line.startswith("::: ")}
    public = set(just_distribute.__all__) - {"__version__"}
    missing = sorted(public - documented)
    assert not missing, f"docs/reference.md has no entry for {missing}"


if __name__ == "__main__":  # a quick manual run: python tests/test_docs.py PAGE.md
    for name in sys.argv[1:]:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            proc = run_page(Path(name).resolve(), Path(tmp), clean_env())
            print(proc.stdout, proc.stderr, json.dumps({"rc": proc.returncode}))
