"""Configuration: one validated settings object, read from ``TUS_*`` environment variables.

Every field's description is the documentation: docs/configuration.md is generated from the
fields (``python -m tools.readme``) and a test fails when it drifts from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ALL_CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5", "crc32")
# Upload events a webhook can receive; each is sent as type "upload.<name>".
WEBHOOK_EVENTS = ("created", "progress", "finished", "terminated", "expired")
# What `video` stands for in TUS_ALLOWED_CONTENT_TYPES.
VIDEO_TYPES = ("video/mp4", "video/mpeg", "video/webm", "video/quicktime")
# Comma-separated in the environment rather than JSON, so a shell user can write a,b.
Csv = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Server settings. Field names map to ``TUS_<NAME>`` environment variables."""

    # hide_input_in_errors: a rejected secret (jwt_secret, database_url...) is never echoed.
    model_config = SettingsConfigDict(
        env_prefix="TUS_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

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
    max_concat_parts: int = Field(
        100,
        ge=1,
        le=1000,
        description=(
            "Most partial uploads one `Upload-Concat: final` may name (each once); clients "
            "send one per parallel connection, tus-js-client's `parallelUploads` is a few."
        ),
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
    max_header_size: int = Field(
        64 * 1024,
        ge=8 * 1024,
        description=(
            "Largest request line plus headers, in bytes; a larger head is answered 431 and "
            "the connection closed (enforced by `tusserver serve`'s HTTP layer)."
        ),
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description=(
            "Seconds a client has to send a complete request line and headers, counted from "
            "the connection (or the request's first byte); then the connection is closed."
        ),
    )
    max_metadata_size: int = Field(
        32 * 1024,
        ge=1024,
        description=(
            "Largest `Upload-Metadata`, in bytes as tus encodes it (base64 values), on every "
            "route that creates uploads; larger is refused with 400 `ERR_METADATA_TOO_LARGE`."
        ),
    )
    write_buffer: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description=(
            "Bytes gathered before one write to disk (per upload; the chunks are written as "
            "received, with one `pwritev`)."
        ),
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
    s3_public_endpoint_url: str | None = Field(
        None,
        description=(
            "S3 endpoint written into every presigned URL the server hands out (download "
            "URLs, direct uploads), for clients that reach S3 at another address than the "
            "server does (docker compose: `http://localhost:9000` while the server calls "
            "`http://minio:9000`). The server's own S3 calls keep `TUS_S3_ENDPOINT_URL`. "
            "Default: `TUS_S3_ENDPOINT_URL`."
        ),
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
        16,
        ge=1,
        description=(
            "Parts uploaded in parallel per process (bounds S3 connections and spool disk)."
        ),
    )
    s3_spool_dir: Path | None = Field(
        None,
        description=(
            "Directory where S3 parts fill once they outgrow `TUS_S3_SPOOL_MEMORY` (anonymous "
            "temporary files); default: the system temp dir. Needs room for about part size "
            "times (parts in flight + 2) per upload."
        ),
    )
    s3_spool_memory: int = Field(
        1024 * 1024,
        ge=0,
        description=(
            "Bytes of a part kept in memory before it spills to disk (per upload); 0 writes "
            "every piece as it arrives."
        ),
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
    redis_max_connections: int = Field(
        256,
        ge=4,
        description=(
            "Connections to Redis per server process. When all are busy a command waits up "
            "to 10 s for one (it does not fail): redis-py's own default, 100 that fail at "
            "once, turned a busy instance's requests into errors."
        ),
    )
    lock_ttl: float = Field(
        3.0,
        gt=1,
        description=(
            "Seconds a Redis lock survives a crashed holder (renewed every third of it while "
            "held): another instance takes over a dead instance's uploads after at most this."
        ),
    )
    delivery_min_ttl: int = Field(
        30, ge=1, description="Shortest lifetime in seconds of a signed download URL."
    )
    delivery_max_ttl: int = Field(
        3600, ge=1, description="Longest lifetime in seconds of a signed download URL."
    )
    delivery_default_ttl: int = Field(
        300, ge=1, description="Lifetime of a signed download URL when the caller gives none."
    )
    delivery_allowed_prefixes: Csv = Field(
        (),
        description=(
            "Storage-key prefixes downloads may name (comma-separated). Default: the upload "
            "prefix (`TUS_S3_PREFIX`; anything on local storage)."
        ),
    )
    delivery_allowed_extensions: Csv = Field(
        (), description="File extensions downloads may name, e.g. `.mp4,.webm`; empty: any."
    )
    delivery_daily_quota_per_ip: int = Field(
        10000,
        ge=0,
        description=(
            "Download URLs one IP address may mint at once; they come back at this many a "
            "day, evenly; 0: no limit."
        ),
    )
    onetime_token_max_ttl: int = Field(
        7 * 86400, ge=60, description="Longest lifetime in seconds of a one-time download token."
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
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        1,
        description=(
            "Server processes sharing one listening socket and the data dir (`tusserver serve`); "
            "`auto`: one per CPU core. Any worker serves any request of any upload."
        ),
    )
    metrics: bool = Field(True, description="Serve Prometheus metrics at `/metrics`.")
    catalog: bool = Field(
        True, description="Record finished uploads in the catalog and serve `/api/v1/files`."
    )
    web_ui: bool = Field(
        True,
        description=(
            "Serve the browser demo page at `/` (assets under `/static/`): uploads with "
            "tus-js-client, the catalog list, downloads. Public; the API calls it makes are not."
        ),
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
    jwt_secret: SecretStr | None = Field(
        None,
        description=(
            "HS256 secret: turns authentication on (every tus request and API route needs a "
            "bearer token). At least 32 bytes."
        ),
    )
    jwt_jwks: str | None = Field(
        None,
        description=(
            "RS256/ES256 instead: a JWKS file path or an `https://` URL (cached, refreshed on "
            "an unknown key id). Turns authentication on."
        ),
    )
    jwt_issuer: str | None = Field(None, description="Required `iss` of tokens, if set.")
    jwt_audience: str | None = Field(
        None,
        description=(
            "Required `aud` of tokens, if set; unset, a token carrying an `aud` is refused."
        ),
    )
    jwt_leeway: float = Field(
        30.0, ge=0, le=300, description="Seconds of clock skew allowed on `exp`/`nbf`/`iat`."
    )
    jwt_roles_claim: str = Field(
        "roles",
        description=(
            "Claim listing the user's roles, a JSON array of strings (anything else refuses the "
            "token); `admin` among them grants admin."
        ),
    )
    insecure: bool = Field(
        False,
        description=(
            "Allow binding to a non-loopback address without authentication (anyone who can "
            "reach the port can upload as the anonymous user)."
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
    rate_limit_per_user: int = Field(
        1200,
        ge=0,
        description=(
            "Sustained requests per minute one user may make to `/api/` routes and upload "
            "creation (anonymous callers count per IP); 0 disables."
        ),
    )
    rate_limit_per_user_burst: int = Field(
        5000,
        ge=1,
        description=(
            "Requests one user may make at once, before `TUS_RATE_LIMIT_PER_USER` paces them."
        ),
    )
    rate_limit_per_ip: int = Field(
        2400,
        ge=0,
        description="Sustained requests per minute per client IP to the same routes; 0 disables.",
    )
    rate_limit_per_ip_burst: int = Field(
        10000,
        ge=1,
        description=(
            "Requests one IP may make at once, before `TUS_RATE_LIMIT_PER_IP` paces them."
        ),
    )
    rate_limit_creations_per_user: int = Field(
        600,
        ge=0,
        description=(
            "Sustained uploads per minute one user may create (tus `POST`, "
            "`/api/v1/uploads/init`); 0 disables."
        ),
    )
    rate_limit_creations_per_user_burst: int = Field(
        2000,
        ge=1,
        description=(
            "Uploads one user may create at once (a folder of files dropped on a page), "
            "before `TUS_RATE_LIMIT_CREATIONS_PER_USER` paces them."
        ),
    )
    idempotency_ttl: int = Field(
        600,
        ge=1,
        description="Seconds a response is replayed for a repeated `Idempotency-Key`.",
    )
    allowed_content_types: Csv = Field(
        (),
        description=(
            "Declared types (`filetype`/`type` metadata) an upload may have, comma-separated; "
            "`video` stands for video/mp4, video/mpeg, video/webm and video/quicktime. "
            "Empty: any type."
        ),
    )
    max_size_user: int = Field(
        0,
        ge=0,
        description="Largest upload in bytes for non-admin users; 0 means `TUS_MAX_SIZE`.",
    )
    max_size_admin: int = Field(
        0, ge=0, description="Largest upload in bytes for admins; 0 means `TUS_MAX_SIZE`."
    )
    max_duration_seconds: float = Field(
        0,
        ge=0,
        description=(
            "Longest media (by the probe's duration) `/api/v1/uploads/complete` accepts; "
            "longer files are deleted. 0 disables."
        ),
    )

    signing_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description=(
            "Secrets (comma-separated, 32+ characters each) for the signed part URLs this "
            "server serves on local storage; the first signs, all verify (key rotation). "
            "Default: a random key per process, so instances sharing a disk must set it."
        ),
    )
    direct_url_ttl: int = Field(
        900,
        ge=10,
        le=3600,
        description=(
            "Seconds a direct-upload URL (S3 presigned or locally signed) stays valid; a part's "
            "URL can be signed again while the upload lasts."
        ),
    )
    direct_expiration: int = Field(
        86400,
        ge=60,
        description=(
            "Seconds a direct upload may stay unfinished; then it is aborted and its parts removed."
        ),
    )

    @field_validator("signing_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("signing_keys")
    @classmethod
    def _strong_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        # Never echo a key: only say what is wrong with it.
        if any(len(key.get_secret_value()) < 32 for key in value):
            raise ValueError("every signing key must be at least 32 characters")
        return value

    @field_validator("s3_public_endpoint_url")
    @classmethod
    def _public_endpoint_is_absolute(cls, value: str | None) -> str | None:
        # It becomes the scheme and host of URLs clients fetch: a relative or schemeless
        # value would yield URLs no client can follow.
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("s3_public_endpoint_url must be an absolute http(s) URL")
        return value

    @field_validator("allowed_content_types", mode="before")
    @classmethod
    def _content_types(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        names: list[str] = []
        for item in items:
            name = str(item).strip().lower()
            names.extend(VIDEO_TYPES if name == "video" else (name,) if name else ())
        return tuple(dict.fromkeys(names))

    @model_validator(mode="after")
    def _role_sizes_fit(self) -> Settings:
        # The global maximum is enforced (and advertised) for everyone; a role's can only
        # lower it, so a larger one would be a silent no-op.
        for name in ("max_size_user", "max_size_admin"):
            if self.max_size and getattr(self, name) > self.max_size:
                raise ValueError(f"{name} must not exceed max_size")
        return self

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

    def worker_count(self) -> int:
        """How many server processes ``workers`` asks for (``auto``: the usable cores)."""
        if self.workers != "auto":
            return self.workers
        import os

        if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (containers)
            return max(1, len(os.sched_getaffinity(0)))
        return os.cpu_count() or 1

    @property
    def auth_enabled(self) -> bool:
        return self.jwt_secret is not None or self.jwt_jwks is not None

    @model_validator(mode="after")
    def _delivery_ttls_are_ordered(self) -> Settings:
        if not self.delivery_min_ttl <= self.delivery_default_ttl <= self.delivery_max_ttl:
            raise ValueError("need delivery_min_ttl <= delivery_default_ttl <= delivery_max_ttl")
        return self

    @model_validator(mode="after")
    def _auth_is_sound(self) -> Settings:
        if self.jwt_secret is not None and self.jwt_jwks is not None:
            raise ValueError("set jwt_secret (HS256) or jwt_jwks (RS256/ES256), not both")
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            # RFC 7518 3.2: an HS256 key shorter than the hash output is brute-forceable.
            raise ValueError("jwt_secret must be at least 32 characters")
        return self

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

    @field_validator(
        "checksum_algorithms",
        "cors_origins",
        "webhook_events",
        "delivery_allowed_prefixes",
        "delivery_allowed_extensions",
        mode="before",
    )
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
