"""The documentation site: `mkdocs build --strict` (broken links, missing pages and unresolvable API
references fail), and a fast check of the README's own links and size."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAVE_MKDOCS = all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings_handlers.python"))


def test_readme_is_short_and_its_local_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 11_000, "the README is the first screen: keep it near 10 KB, the rest goes to docs/"
    first = text[:2500]
    assert "python -m venv .venv" in first and "pip install -e ." in first and "bash scripts/test.sh" in first
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        if not (ROOT / target).exists():
            missing.append(target)
    assert not missing, f"README links to missing files: {missing}"


def test_no_tracker_numbers_in_code_docs_or_help():
    """Text says what a thing does and why, not which tracker issue asked for it."""
    pattern = re.compile(r"\bissues? ?#?\d+\b|\(#\d+\)", re.I)
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "irs_torch").rglob("*.py"),
             *(ROOT / "scripts").glob("*"), *(ROOT / "examples").glob("*.py"), *(ROOT / "training").rglob("*.md"),
             *(ROOT / "training").glob("*.yaml"), *(ROOT / "checkpoints").glob("*.md"), *(ROOT / "tests").glob("*.py")]
    hits = [f"{f.relative_to(ROOT)}:{i}: {ln.strip()[:80]}" for f in files if f.is_file()
            for i, ln in enumerate(f.read_text(errors="replace").splitlines(), 1) if pattern.search(ln)]
    assert not hits, "\n".join(hits)


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").glob("*.md")]
    pages += [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs" / "api").glob("*.md")]
    assert pages and not [p for p in pages if f" {p}" not in nav]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs, mkdocs-material or mkdocstrings[python] not installed: "
                                            "pip install -e '.[docs]'")
def test_mkdocs_build_strict(tmp_path):
    """About 35-45 s on a loaded 2-core machine (the API pages are parsed from the source)."""
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = tmp_path / "site"
    assert "fisher_information" in (site / "api" / "crb" / "index.html").read_text()
    assert (site / "images" / "design-paper.png").is_file() and (site / "results" / "fig2.png").is_file()
    assert not list(site.rglob("*.jsonl")) and not list(site.rglob("*.pt"))  # data stays out of the site


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    """The README's Python block, verbatim, in its own process (a default solve of the paper scenario)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "design.png").is_file() and (tmp_path / "sol.npz").is_file()
