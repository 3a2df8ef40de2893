"""Regenerate the documentation that comes from code: ``python -m tools.readme``.

* docs/configuration.md, whole, from the settings class (``tools.configdoc``);
* the error-code table in docs/api.md, between its ``<!-- errors:start/end -->`` markers.

tests/test_readme.py fails when either is out of date.
"""

from __future__ import annotations

import re
from pathlib import Path

from tools.configdoc import reference
from tusserver.errors import error_table

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
API = ROOT / "docs" / "api.md"


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with what lies between the ``name`` markers replaced by ``content``."""
    return re.sub(
        rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
        lambda m: f"{m.group(1)}{content}\n{m.group(2)}",
        text,
        flags=re.S,
    )


def main() -> None:
    CONFIGURATION.write_text(reference())
    API.write_text(replace_block(API.read_text(), "errors", error_table()))


if __name__ == "__main__":
    main()
