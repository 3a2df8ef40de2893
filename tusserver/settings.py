"""Configuration: one validated settings object, read from ``TUS_*`` environment variables.

Every field's description is the documentation; the README's settings table is generated from
these descriptions (``python -m tusserver.settings``), so the two cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ALL_CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5", "crc32")
# Comma-separated in the environment rather than JSON, so a shell user can write a,b.
Csv = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Server settings. Field names map to ``TUS_<NAME>`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TUS_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=0, le=65535, description="Port to bind.")
    data_dir: Path = Field(
        Path("./data"), description="Directory for upload bytes and local state."
    )
    base_path: str = Field(
        "/files/", description="URL path of the tus creation endpoint; uploads live below it."
    )
    public_url: str | None = Field(
        None,
        description=(
            "Absolute URL prefix for `Location` (e.g. `https://up.example.com`). "
            "Default: derived from each request."
        ),
    )
    trust_proxy: bool = Field(
        False,
        description=(
            "Honour `X-Forwarded-Host`/`X-Forwarded-Proto`/`Forwarded` when building "
            "`Location`. Enable only behind a proxy that overwrites (not appends to) them."
        ),
    )
    max_size: int = Field(
        0,
        ge=0,
        description="Largest upload in bytes, advertised as `Tus-Max-Size`; 0 means no limit.",
    )
    expiration: int = Field(
        86400,
        ge=0,
        description=(
            "Seconds an unfinished upload may sit idle before it expires (renewed by every "
            "PATCH); 0 disables expiration."
        ),
    )
    sweep_interval: float = Field(
        60.0, gt=0, description="Seconds between in-process expiry sweeps."
    )
    checksum_algorithms: Csv = Field(
        ALL_CHECKSUM_ALGORITHMS,
        description="Algorithms accepted in `Upload-Checksum` (comma-separated).",
    )
    cors_origins: Csv = Field(
        ("*",),
        description=(
            "Allowed browser origins, comma-separated: exact origins such as "
            "`https://app.example.com`, or `*` for any."
        ),
    )
    cors_allow_credentials: bool = Field(
        False, description="Send `Access-Control-Allow-Credentials: true` (cookies, Uppy)."
    )
    cors_max_age: int = Field(86400, ge=0, description="Seconds browsers may cache a preflight.")
    lock_wait: float = Field(
        3.0,
        gt=0,
        description=(
            "Seconds a request waits for a busy upload's holder to let go before answering 423."
        ),
    )
    read_timeout: float = Field(
        60.0, gt=0, description="Seconds without body bytes before a PATCH is cut off."
    )
    write_buffer: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes gathered in memory before one write to disk (per upload).",
    )
    checkpoint_interval: float = Field(
        1.0,
        gt=0,
        description=(
            "Seconds between durable offset checkpoints during a long PATCH (bounds what a "
            "crash can lose mid-request)."
        ),
    )
    storage: Literal["local"] = Field("local", description="Where bytes live: `local`.")
    state: Literal["local"] = Field("local", description="Where upload state lives: `local`.")
    log_level: str = Field("info", description="Logging level.")

    @model_validator(mode="after")
    def _no_credentials_for_any_origin(self) -> Settings:
        # Echoing every origin with credentials would let any site act with a user's cookies.
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_allow_credentials needs explicit cors_origins, not *")
        return self

    @field_validator("base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        path = "/" + value.strip("/")
        return path.rstrip("/") + "/"

    @field_validator("public_url")
    @classmethod
    def _normalise_public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("checksum_algorithms", "cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("checksum_algorithms")
    @classmethod
    def _known_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(v.lower() for v in value)
        unknown = sorted(set(names) - set(ALL_CHECKSUM_ALGORITHMS))
        if unknown:
            raise ValueError(f"unknown checksum algorithms: {', '.join(unknown)}")
        return names


def settings_table() -> str:
    """The README table of settings, from the field descriptions."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif default is None:
            default = "(unset)"
        rows.append(f"| `TUS_{name.upper()}` | `{default}` | {info.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
