"""Untrusted JSON and untrusted text: the one parser every JSON body goes through, and the
rule for which characters may reach a database.

``loads`` is used for request bodies (``jsonapi.read_json``), for what an operator's hook
answers and for the payload of our own signed tokens (read before the signature is checked).
It takes strict UTF-8 only (a leading BOM is tolerated), refuses ``NaN``/``Infinity``,
bounds the nesting depth and refuses any string, key or value, holding a NUL or a lone
surrogate. Python's ``json`` accepts ``"\\ud800"`` and recurses in C on nesting until it
raises ``RecursionError``, which no caller expected: both used to end in a 500.

Text rule: Postgres refuses NUL in ``text`` and ``json``, asyncpg cannot encode a lone
surrogate, and a lone surrogate SQLite stored makes every later JSON answer carrying it fail
to encode. Input a client typed is refused (``InvalidText``); text a protocol legally
carries as arbitrary bytes (tus metadata) is normalised with ``storable`` instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tusserver import errors

# Far above anything the API's bodies need (three levels at most), far below the C parser's
# recursion limit.
MAX_DEPTH = 32

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def unstorable(text: str) -> bool:
    """True when ``text`` holds a NUL or a lone surrogate, which some store cannot keep."""
    return _UNSTORABLE.search(text) is not None


def storable(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def check_text(text: str) -> str:
    """``text`` itself, or ``InvalidText`` when a store could not keep it."""
    if unstorable(text):
        raise errors.InvalidText()
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data``; ``InvalidText``, ``JsonTooDeep`` or ``ValidationFailed`` (syntax)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise errors.InvalidText("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise errors.JsonTooDeep() from None
    except ValueError:
        raise errors.ValidationFailed("the body is not valid JSON") from None
    _check_tree(value, max_depth)
    return value


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and text of a parsed value, walked with a list as the stack (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, list | dict):
            if depth >= max_depth:
                raise errors.JsonTooDeep(f"JSON may nest at most {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
