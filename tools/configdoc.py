"""docs/configuration.md, generated whole from ``tusserver.settings.Settings``.

Each field gives one row: its ``TUS_*`` variable, its type (with the bounds pydantic
enforces), its default and its description. ``python -m tools.readme`` writes the file and
``tests/test_readme.py`` fails when it is out of date, so the reference cannot drift from the
settings class.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from tusserver.settings import Settings

HEADER = """\
# Configuration reference

<!-- Generated from tusserver/settings.py by `python -m tools.readme`; do not edit by hand.
     tests/test_readme.py fails when this file and the settings class disagree. -->

Every setting is an environment variable, `TUS_` followed by the field name in capitals.
`tusserver serve` also takes `--host`, `--port`, `--data-dir`, `--base-path`, `--max-size`,
`--expiration`, `--log-level` and `--workers`, which win over the environment.
`tusserver config` prints the value each setting has right now and where it came from
(option, environment or default), with secrets masked.

Lists are comma-separated (`TUS_CORS_ORIGINS=https://a.example,https://b.example`);
booleans are `true`/`false`; sizes are in bytes and durations in seconds. A value the
server cannot use stops it at startup with a message naming the setting.

| variable | type | default | meaning |
| --- | --- | --- | --- |
"""

_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret",
}


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``integer``, ``one of `a`, `b` ``, ``list of ...``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return type_name(inner[0]) if len(inner) == 1 else " or ".join(map(type_name, inner))
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is tuple:
        return f"list of {type_name(args[0])}s"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def bounds(info: FieldInfo) -> str:
    """The limits pydantic enforces, as ``≥ 0, ≤ 65535``."""
    found = []
    for item in info.metadata:
        for kind, sign in ((Ge, "≥"), (Gt, ">"), (Le, "≤"), (Lt, "<")):
            if isinstance(item, kind):
                found.append(f"{sign} {getattr(item, kind.__name__.lower())}")
    return ", ".join(found)


def default_text(info: FieldInfo) -> str:
    default = info.default
    if default is None:
        return "(unset)"
    if isinstance(default, tuple):
        return f"`{','.join(map(str, default))}`" if default else "(empty)"
    if isinstance(default, SecretStr):
        return f"`{default.get_secret_value()}`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`" if str(default) else "(empty)"


def row(name: str, info: FieldInfo) -> str:
    kind = type_name(info.annotation)
    limits = bounds(info)
    if limits:
        kind = f"{kind} ({limits})"
    return f"| `TUS_{name.upper()}` | {kind} | {default_text(info)} | {info.description} |"


def reference() -> str:
    """The whole of docs/configuration.md."""
    rows = [row(name, info) for name, info in Settings.model_fields.items()]
    return HEADER + "\n".join(rows) + "\n"
