"""The repository explains itself: comments cite docs/protocol.md by section, and only that.

Code once cited line ids of a checklist that is not part of the repository (``T`` plus three
digits, ``A`` plus one or two); a reader could not follow them. These tests keep such ids out
and check that every ``docs/protocol.md, "<heading>"`` citation names a heading that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"
SOURCE_DIRS = ("tusserver", "catalog", "delivery", "tests", "bench", "tools")

# A checklist line id: T and three digits anywhere; A and one or two digits inside a
# parenthesised list or before a colon. "%C3%A9" and names such as "T0" or "A4_SIZE" do not
# match.
CHECKLIST_ID = re.compile(
    r"(?<![%\w])T\d{3}(?![\w%])"
    r"|(?<![%\w])A\d{1,2}(?=[),:;])"
    r"|(?<=[(,] )A\d{1,2}(?![\w%])"
    r"|\(A\d{1,2}(?![\w%])"
)
TEST_NAME_WITH_ID = re.compile(r"def test_t\d{3}_")
# docs/protocol.md, "One" / "One", "Two" and "Three"; the list may wrap in a docstring.
CITATION = re.compile(r'docs/protocol\.md,\s*("[^"\n]+"(?:(?:,\s*|\s+and\s+)"[^"\n]+")*)')
HEADING = re.compile(r"^## (.+)$", re.M)


def sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    return [*files, ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def headings() -> list[str]:
    return HEADING.findall(PROTOCOL.read_text())


def test_sources_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in sources()}
    assert {"tusserver/edge/middleware.py", "tests/conformance/test_core.py", "README.md"} <= names


def test_no_checklist_ids() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if CHECKLIST_ID.search(line) or TEST_NAME_WITH_ID.search(line)
    ]
    assert not found, "cite docs/protocol.md by section instead:\n" + "\n".join(found)


def test_no_reference_to_the_outside_checklist() -> None:
    found = [
        str(path.relative_to(ROOT))
        for path in sources()
        if "tus-conformance" in path.read_text() and path != Path(__file__).resolve()
    ]
    assert not found


def test_headings_are_unique() -> None:
    names = headings()
    assert len(names) == len(set(names))
    assert len(names) >= 20


def cited(text: str) -> list[str]:
    return [
        name for match in CITATION.finditer(text) for name in re.findall(r'"([^"]+)"', match[1])
    ]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('x (docs/protocol.md, "Expiration").', ["Expiration"]),
        ('docs/protocol.md, "A", "B" and\n"C"', ["A", "B", "C"]),
        ("docs/protocol.md, cited by section heading", []),
    ],
)
def test_citation_parser(text: str, names: list[str]) -> None:
    assert cited(text) == names


def test_citations_name_existing_sections() -> None:
    known = set(headings())
    citations = {
        (str(path.relative_to(ROOT)), name)
        for path in sources()
        if path != Path(__file__).resolve()
        for name in cited(path.read_text())
    }
    assert len(citations) > 50, "the citation pattern no longer matches the code's citations"
    unknown = sorted(f"{path}: {name!r}" for path, name in citations if name not in known)
    assert not unknown, "no such heading in docs/protocol.md:\n" + "\n".join(unknown)


def test_no_citation_split_across_lines() -> None:
    # A heading broken over two comment lines ("...completed\n# upload") cannot be checked.
    split = re.compile(r'docs/protocol\.md,\s*"[^"\n]*\n')
    found = [str(path.relative_to(ROOT)) for path in sources() if split.search(path.read_text())]
    assert not found


def test_pinning_tests_exist() -> None:
    named = set(re.findall(r"`(tests/[\w/]+\.py)`", PROTOCOL.read_text()))
    assert named
    assert not sorted(n for n in named if not (ROOT / n).is_file())
