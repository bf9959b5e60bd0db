"""Every ``docs/architecture.md#<heading>`` a docstring, comment or doc cites names a heading
there, and nothing in the repo points at design files outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
_LINK = re.compile(r"(?:docs/)?architecture\.md#([a-z0-9_-]+)")


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation other than ``-``
    and ``_`` dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            found.add(anchor(m.group(1)))
    return found


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.toml", "Makefile"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.split()]


def test_anchor_rule() -> None:
    assert anchor("Report topics end in the sender's inbox") == "report-topics-end-in-the-senders-inbox"
    assert anchor("TCP_NODELAY everywhere") == "tcp_nodelay-everywhere"
    assert anchors("# A\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c"}


def test_every_cited_section_exists() -> None:
    known = anchors(DOC.read_text())
    cited: dict[str, list[str]] = {}
    for path in _tracked_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in _LINK.findall(line):
                cited.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{n}")
    # positive witness: the scan did find the docstrings' citations
    assert {"mqtt-topic-contract", "presence", "trust-model"} <= set(cited)
    missing = {name: where for name, where in cited.items() if name not in known}
    assert not missing, f"no such heading in docs/architecture.md: {missing}"


def test_no_pointers_outside_the_repo() -> None:
    stale = re.compile(r"\.\./shared|DESIGN\.md|DESIGN §")
    hits = [f"{p.relative_to(ROOT)}:{n}"
            for p in _tracked_text_files() if p.name != Path(__file__).name
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if stale.search(line)]
    assert not hits, f"pointers to design files outside the repo: {hits}"
