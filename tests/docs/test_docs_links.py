"""The README and the docs site point where they say.

The README lives outside the MkDocs site (docs/), so `mkdocs build --strict` does not see its
links: here every relative link in README.md must reach a file, and every `page.md#anchor` a
heading of that page (slugged as MkDocs slugs it). The README must keep the two set-up commands
that CI runs, the settings page must name every field of `Settings`, and the site itself must
build strictly (scripts/test.sh builds it too; this catches a broken page when pytest runs alone).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slugify(m.group(1).strip(), "-") for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def _relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", text)) if not re.match(r"[a-z]+:", t)]


def test_readme_links_reach_files_and_headings():
    links = _relative_links((REPO / "README.md").read_text())
    assert len(links) > 20, links  # the README points into the docs
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = REPO / path
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {path}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    linked = {link.partition("#")[0] for link in _relative_links((REPO / "README.md").read_text())}
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set()


def test_readme_keeps_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    assert "```\nbash scripts/quickstart.sh\n```" in readme
    assert "```\nbash scripts/test.sh\n```" in readme
    assert "exec bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_docs_site_builds_strictly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "site" / "trainer" / "index.html").exists()


def test_every_setting_is_in_the_settings_page():
    from openft.config import Settings

    page = (REPO / "docs" / "settings.md").read_text()
    missing = [f"OPENFT_{name.upper()}" for name in Settings.model_fields if f"`OPENFT_{name.upper()}`" not in page]
    assert not missing, f"add these to docs/settings.md's table: {missing}"


def test_code_fences_are_closed():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    odd = [p.name for p in pages if sum(line.startswith("```") for line in p.read_text().splitlines()) % 2]
    assert not odd, f"an unclosed ``` swallows the rest of: {odd}"
