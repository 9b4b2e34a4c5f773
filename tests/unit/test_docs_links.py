"""The README stays a first screen, and every relative link in the docs leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250

#: `[text](target)`; images too. The target ends at the first space or `)`.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def _documents() -> list[Path]:
    docs = sorted((REPO / "docs").rglob("*.md")) if (REPO / "docs").is_dir() else []
    return [REPO / "README.md", REPO / "bench" / "README.md", *docs]


def _prose(text: str) -> str:
    """The text outside fenced code blocks, where a `[x](y)` is code, not a link."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    anchors: set[str] = set()
    fenced = False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.*)", line)):
            anchor = base = _anchor(match.group(1))
            n = 0
            while anchor in anchors:  # GitHub numbers repeated headings: x, x-1, x-2
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


def _relative_links(document: Path) -> list[str]:
    links = LINK.findall(_prose(document.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


def _broken(document: Path, link: str) -> str | None:
    path_part, _, fragment = link.partition("#")
    target = (document.parent / unquote(path_part)).resolve() if path_part else document
    if not target.exists():
        return f"{link}: no such file {target}"
    if fragment and target.suffix == ".md" and fragment not in _anchors(target):
        return f"{link}: no heading #{fragment} in {target.relative_to(REPO)}"
    return None


def test_the_readme_is_a_first_screen_not_a_manual() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): "
        "move details to docs/ and link them"
    )


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(document: Path) -> None:
    broken = [b for link in _relative_links(document) if (b := _broken(document, link))]
    assert not broken, f"{document.relative_to(REPO)}: " + "; ".join(broken)


def test_anchors_follow_githubs_rules() -> None:
    assert _anchor("Time series: forecast and anomaly") == "time-series-forecast-and-anomaly"
    assert _anchor("The API (`/v1`)") == "the-api-v1"
    assert _anchor("Quality (`make eval`, [`x.json`](x.json))") == "quality-make-eval-xjson"
