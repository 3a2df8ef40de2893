"""Configuration: one validated settings object, read from ``TUS_*`` environment variables.

Every field's description is the documentation; the README's settings table is generated from
these descriptions (``python -m tusserver.settings``), so the two cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ALL_CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5", "crc32")
# Upload events a webhook can receive; each is sent as type "upload.<name>".
WEBHOOK_EVENTS = ("created", "progress", "finished", "terminated", "expired")
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
    storage: Literal["local", "s3"] = Field(
        "local", description="Where bytes live: `local` (under `TUS_DATA_DIR`) or `s3`."
    )
    state: Literal["local", "redis"] = Field(
        "local",
        description=(
            "Where upload state and locks live: `local` (one process) or `redis` (any number "
            "of instances behind a load balancer)."
        ),
    )
    s3_bucket: str | None = Field(None, description="S3 bucket (required with `s3` storage).")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph, R2); default: AWS."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_prefix: str = Field("", description="Key prefix for every object, e.g. `uploads/`.")
    s3_addressing_style: Literal["path", "virtual", "auto"] = Field(
        "path", description="Bucket addressing; `path` works with every S3-compatible store."
    )
    s3_part_size: int = Field(
        16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description=(
            "Preferred multipart part size in bytes; raised automatically so no upload needs "
            "more than 10,000 parts."
        ),
    )
    s3_fixed_part_size: int | None = Field(
        None, description="Use exactly this part size (stores such as R2 require equal parts)."
    )
    s3_concurrency: int = Field(4, ge=1, description="Parts uploaded in parallel per upload.")
    s3_max_parts_in_flight: int = Field(
        16, ge=1, description="Parts uploaded in parallel per process (bounds memory)."
    )
    s3_sse: Literal["AES256", "aws:kms"] | None = Field(
        None, description="Server-side encryption for stored objects."
    )
    s3_kms_key_id: str | None = Field(None, description="KMS key id with `aws:kms`.")
    # A secret: the URL may carry a password, and settings may end up in a log or traceback.
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis for `redis` state (credentials in the URL).",
    )
    redis_prefix: str = Field("tus:", description="Prefix of every Redis key this server uses.")
    lock_ttl: float = Field(
        30.0,
        gt=1,
        description="Seconds a Redis lock survives a crashed holder (refreshed while held).",
    )
    log_level: str = Field("info", description="Logging level.")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        description=(
            "`json` (one object per line), `text` (`key=value`), or `auto`: JSON unless "
            "stderr is a terminal."
        ),
    )
    shutdown_timeout: int = Field(
        10,
        ge=1,
        description=(
            "Seconds the server waits for in-flight requests after SIGTERM (PATCHes are told "
            "to persist and answer at once) before it exits anyway."
        ),
    )
    metrics: bool = Field(True, description="Serve Prometheus metrics at `/metrics`.")
    catalog: bool = Field(
        True, description="Record finished uploads in the catalog and serve `/api/v1/files`."
    )
    database_url: SecretStr | None = Field(
        None,
        description=(
            "Catalog database, an async SQLAlchemy URL: `sqlite+aiosqlite:///path.db` or "
            "`postgresql+asyncpg://user:pass@host/db`. Default: `catalog.db` in the data dir."
        ),
    )
    database_migrate: bool | None = Field(
        None,
        description=(
            "Upgrade the catalog schema when the server starts. Default: on for SQLite, off "
            "otherwise (run `tusserver migrate` once per deployment instead)."
        ),
    )
    anonymous_owner: str = Field(
        "local",
        min_length=1,
        max_length=255,
        description="Owner recorded for uploads made without authentication.",
    )
    media_probe: bool = Field(
        True,
        description=(
            "Probe finished uploads with `ffprobe` (duration, size, codecs, fps) and make a "
            "JPEG thumbnail with `ffmpeg`, when they are installed."
        ),
    )
    media_probe_timeout: float = Field(
        60.0, gt=0, description="Seconds one ffprobe or ffmpeg run may take before it is killed."
    )
    thumbnail_width: int = Field(320, ge=16, le=4096, description="Thumbnail width in pixels.")
    orphan_grace: float = Field(
        86400.0,
        ge=0,
        description=(
            "Seconds before the sweeper removes storage no upload knows about (S3 multipart "
            "uploads under the prefix, local files), left by crashes or lost state."
        ),
    )
    deleted_grace: float = Field(
        3600.0,
        ge=0,
        description=(
            "Seconds a file deleted from the catalog keeps its bytes before the sweeper "
            "removes them."
        ),
    )

    webhook_url: str | None = Field(
        None,
        description=(
            "POST signed JSON upload events here (see Hooks and webhooks); needs "
            "`TUS_WEBHOOK_SECRET`."
        ),
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description=(
            "HMAC-SHA256 key for `X-Tus-Signature` on webhook and pre-create hook requests."
        ),
    )
    webhook_events: Csv = Field(
        WEBHOOK_EVENTS,
        description="Events sent to the webhook (comma-separated, from the default list).",
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds one webhook delivery attempt may take."
    )
    webhook_max_attempts: int = Field(
        6,
        ge=1,
        description="Delivery attempts per event (retries on network errors, 429 and 5xx).",
    )
    webhook_queue_size: int = Field(
        1000,
        ge=1,
        description=(
            "Events waiting for delivery; when full, new events are dropped (and logged) "
            "rather than slowing uploads."
        ),
    )
    pre_create_hook_url: str | None = Field(
        None,
        description=(
            "Ask this URL before creating each upload: 2xx admits it (may add metadata), 4xx "
            "refuses it; needs `TUS_WEBHOOK_SECRET`."
        ),
    )
    pre_create_hook_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to wait for the pre-create hook before answering 503.",
    )

    @model_validator(mode="after")
    def _hooks_are_signed(self) -> Settings:
        # Unsigned events could be forged by anyone who can reach the receiver.
        if (self.webhook_url or self.pre_create_hook_url) and self.webhook_secret is None:
            raise ValueError("webhook_url and pre_create_hook_url need webhook_secret")
        return self

    @model_validator(mode="after")
    def _no_credentials_for_any_origin(self) -> Settings:
        # Echoing every origin with credentials would let any site act with a user's cookies.
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_allow_credentials needs explicit cors_origins, not *")
        return self

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage=s3 needs s3_bucket (TUS_S3_BUCKET)")
        if self.storage == "s3" and not self.max_size:
            # Part sizes of a deferred-length upload are planned from the maximum; planning
            # for S3's 5 TiB would mean ~524 MiB parts held in memory per upload.
            raise ValueError("storage=s3 needs max_size (TUS_MAX_SIZE), e.g. 107374182400")
        if self.s3_sse == "aws:kms" and not self.s3_kms_key_id:
            raise ValueError("s3_sse=aws:kms needs s3_kms_key_id")
        return self

    def catalog_url(self) -> str:
        """The catalog database URL, secret included (never log it)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir.absolute() / 'catalog.db'}"

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = value.get_secret_value().split(":", 1)[0]
        if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            # Never echo the URL: it may hold a password.
            raise ValueError(
                "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return value

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

    @field_validator("webhook_url", "pre_create_hook_url")
    @classmethod
    def _hook_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            # Never echo it: a hook URL may carry a token.
            raise ValueError("hook URLs must start with http:// or https://")
        return value

    @field_validator("webhook_events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(v.lower() for v in value)
        unknown = sorted(set(names) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ValueError(f"unknown webhook events: {', '.join(unknown)}")
        return names

    @field_validator("checksum_algorithms", "cors_origins", "webhook_events", mode="before")
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
        elif isinstance(default, SecretStr):
            default = default.get_secret_value()
        rows.append(f"| `TUS_{name.upper()}` | `{default}` | {info.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
