"""The README's settings and error tables are generated from the code; they must not drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tusserver.errors import error_table
from tusserver.settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def block(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", README.read_text(), re.S)
    assert match, f"README lacks the {name} markers"
    return match.group(1).strip()


@pytest.mark.parametrize(("name", "table"), [("settings", settings_table), ("errors", error_table)])
def test_generated_tables_are_current(name: str, table) -> None:  # type: ignore[no-untyped-def]
    assert block(name) == table(), "regenerate with: python -m tools.readme"
