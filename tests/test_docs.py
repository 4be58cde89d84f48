"""The docs stay reference pages: short enough to read, links that resolve, no narration of past work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REFERENCE_PAGES = ("docs/benchmarks.md", "docs/model-report.md")
MAX_LINES = 400

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
ORDINAL = (r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|"
           r"fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty-\w+")
# work-history narration: numbered rounds, the Nth attempt/round/checkpoint, issue numbers
NARRATION = re.compile(
    rf"\bround \d+\b"
    rf"|\b(?:{ORDINAL}) (?:attempt|round|try|checkpoint)\b"
    rf"|\bissue \d+\b",
    re.IGNORECASE)


def relative_links(text: str) -> list[str]:
    """The link targets of a markdown page that point into the repository (no URL, no bare anchor)."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def narration(text: str) -> list[str]:
    """The lines of a page that narrate the project's own work history."""
    return [line.strip() for line in text.splitlines() if NARRATION.search(line)]


@pytest.mark.parametrize("page", REFERENCE_PAGES)
def test_reference_pages_are_short(page):
    lines = (ROOT / page).read_text(encoding="utf-8").count("\n")
    assert lines < MAX_LINES, f"{page} has {lines} lines; a reference page stays under {MAX_LINES}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    missing = [t for t in relative_links(page.read_text(encoding="utf-8"))
               if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_describe_the_product_not_its_history(page):
    found = narration(page.read_text(encoding="utf-8"))
    assert not found, f"{page.relative_to(ROOT)} narrates work history (CHANGELOG.md is the place): {found}"


def test_the_checks_catch_what_they_are_for():
    text = "See [a](docs/a.md#x), [b](https://example.com), [c](#top) and ![d](img/d.png \"title\")."
    assert relative_links(text) == ["docs/a.md", "img/d.png"]
    assert narration("Measured in the seventeenth attempt.\nSession timeout: 6 s.\nRound 3 gave 0.9.") == [
        "Measured in the seventeenth attempt.", "Round 3 gave 0.9."]
    assert narration("the tenth checkpoint\nas in issue 5") != []
    assert narration("the consumer's session timeout; a round of 3 calls; the first window") == []
