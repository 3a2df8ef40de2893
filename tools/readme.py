"""Regenerate the tables in README.md that come from code: ``python -m tools.readme``."""

from __future__ import annotations

import re
from pathlib import Path

from tusserver.errors import error_table
from tusserver.settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    text = README.read_text()
    for name, table in (("settings", settings_table()), ("errors", error_table())):
        text = re.sub(
            rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
            lambda m, t=table: f"{m.group(1)}{t}\n{m.group(2)}",
            text,
            flags=re.S,
        )
    README.write_text(text)


if __name__ == "__main__":
    main()
