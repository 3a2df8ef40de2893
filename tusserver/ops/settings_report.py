"""The effective settings as a person reads them: ``tusserver config``.

Each setting is shown with where its value came from (a command-line option, a ``TUS_*``
environment variable, or the default), so "why does it listen there?" has an answer without
reading code. Secrets are never printed: a ``SecretStr`` shows as ``********`` (or "not set"),
and a password inside a URL is masked, because people paste this output into bug reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from tusserver.settings import Settings

MASK = "********"


def setting_rows(settings: Settings, overrides: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(TUS_NAME, shown value, source)`` for every setting, in declaration order."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    rows = []
    for name in type(settings).model_fields:
        env_name = f"{prefix}{name}".upper()
        rows.append(
            (env_name, shown_value(getattr(settings, name)), _source(name, env_name, overrides))
        )
    return rows


def render(rows: Iterable[tuple[str, str, str]]) -> str:
    """Aligned columns, one setting a line."""
    rows = list(rows)
    width = max(len(name) for name, _, _ in rows)
    source_width = max(len(source) for _, _, source in rows)
    return "\n".join(
        f"{name:<{width}}  {source:<{source_width}}  {value}" for name, value, source in rows
    )


def shown_value(value: object) -> str:
    """A setting's value as text with every secret masked."""
    if value is None:
        return "not set"
    if isinstance(value, SecretStr):
        return _mask_secret(value)
    if isinstance(value, tuple):
        return ",".join(shown_value(item) for item in value) or "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return _mask_url_password(str(value)) if str(value) else "(empty)"


def _mask_secret(value: SecretStr) -> str:
    """A secret URL (Redis, database) keeps its scheme and host; any other secret is hidden."""
    text = value.get_secret_value()
    if "://" not in text:
        return MASK if text else "(empty)"
    masked = urlsplit(_mask_url_password(text))
    # A driver may take its password as a query parameter (?password=...).
    return urlunsplit(masked._replace(query=MASK if masked.query else ""))


def _mask_url_password(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.password:
        return text
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _source(name: str, env_name: str, overrides: Mapping[str, Any]) -> str:
    if name in overrides:
        return "option"
    if any(key.upper() == env_name for key in os.environ):
        return "environment"
    return "default"
