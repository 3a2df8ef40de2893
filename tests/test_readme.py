"""The documentation generated from code must not drift from it: docs/configuration.md (from
the settings class) and the error-code table in docs/api.md (from tusserver/errors.py).
Regenerate both with ``python -m tools.readme``."""

from __future__ import annotations

import re
from pathlib import Path

from tools.configdoc import reference, type_name
from tools.readme import API, CONFIGURATION
from tusserver.errors import error_table
from tusserver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def block(path: Path, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", path.read_text(), re.S)
    assert match, f"{path.name} lacks the {name} markers"
    return match.group(1).strip()


def test_configuration_reference_is_current() -> None:
    assert CONFIGURATION.read_text() == reference(), "regenerate with: python -m tools.readme"


def test_configuration_reference_names_every_setting() -> None:
    text = CONFIGURATION.read_text()
    missing = [n for n in Settings.model_fields if f"| `TUS_{n.upper()}` |" not in text]
    assert not missing
    assert len(Settings.model_fields) > 80


def test_every_setting_has_a_description_and_a_readable_type() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description, name
        assert "typing" not in type_name(info.annotation), name


def test_error_table_is_current() -> None:
    assert block(API, "errors") == error_table(), "regenerate with: python -m tools.readme"


def test_readme_links_the_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme
