"""The documentation's relative links resolve: every ``[text](target)`` in README.md and docs/*.md that is not a web
address names an existing file, and its ``#anchor``, if any, a heading of that file (GitHub's anchor rule)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup removed, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]  # http:, https:, mailto:


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file {dest.relative_to(root) if dest.is_relative_to(root) else dest}")
        elif anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    problems = broken_links(doc)
    assert not problems, f"{doc.relative_to(REPO)}: broken links:\n" + "\n".join(problems)


def test_the_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## The offline main job (`make demo`)\n\n## Twice\n\n## Twice\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "See [page](docs/page.md), [job](docs/page.md#the-offline-main-job-make-demo), [2nd](docs/page.md#twice-1),\n"
        "[web](https://example.org/x.md), [mail](mailto:a@b.c), ![img](docs/missing.png),\n"
        "[gone](docs/gone.md), [bad anchor](docs/page.md#nope), [self](#nowhere).\n"
        "`[not a link](docs/none.md)`\n\n```\n[nor this](docs/none.md)\n```\n"
    )
    problems = broken_links(doc, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["docs/missing.png", "docs/gone.md", "docs/page.md#nope", "#nowhere"]


def test_slug_follows_github() -> None:
    assert slug("The offline main job (`make demo`)") == "the-offline-main-job-make-demo"
    assert slug("Pipelines: what compile, submit and resume do") == "pipelines-what-compile-submit-and-resume-do"
    assert slug("On a GPU: one H200 (`bench/gpu_check.py`)") == "on-a-gpu-one-h200-benchgpu_checkpy"
    assert slug("The `cure` command") == "the-cure-command"
