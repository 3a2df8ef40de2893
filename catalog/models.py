"""The catalog's tables: one row per finished upload (the ``files`` table).

The schema is owned by Alembic (``migrations/``); these models are what autogenerate compares
against, so every index and constraint is declared here, named by one convention.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints: SQLite's batch migrations and Postgres' ALTERs both need a name to drop
# or change a constraint, and names that follow a rule never collide between environments.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Lengths: ids are 32 hex chars; owners are JWT subjects; names are capped at 255 bytes by
# the sanitizer but the original may be longer, so it gets more room before truncation.
ID_LENGTH = 32
OWNER_LENGTH = 255
FILENAME_LENGTH = 255
ORIGINAL_FILENAME_LENGTH = 1024
KEY_LENGTH = 1024
MEDIA_TYPE_LENGTH = 127


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database.

    SQLite has no time zone type and hands back naive values; storing UTC and re-attaching
    the zone on the way out keeps comparisons and JSON output identical on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares the stored text, so every value must have the same shape: naive UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FileRecord(Base):
    """A finished upload, as apps list, search and reuse it.

    Rows are soft-deleted (``deleted_at``); the sweeper later removes the bytes and stamps
    ``purged_at``. ``processed_at`` stays empty until the off-request work (checksum fallback,
    media probe, thumbnail) has run, so an interrupted run can be picked up again.
    """

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    owner: Mapped[str] = mapped_column(String(OWNER_LENGTH))
    filename: Mapped[str] = mapped_column(String(FILENAME_LENGTH))
    original_filename: Mapped[str | None] = mapped_column(String(ORIGINAL_FILENAME_LENGTH))
    storage_backend: Mapped[str] = mapped_column(String(16))
    storage_key: Mapped[str] = mapped_column(String(KEY_LENGTH), unique=True)
    content_type: Mapped[str] = mapped_column(String(MEDIA_TYPE_LENGTH))
    declared_content_type: Mapped[str | None] = mapped_column(String(MEDIA_TYPE_LENGTH))
    detected_content_type: Mapped[str | None] = mapped_column(String(MEDIA_TYPE_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # "metadata" is reserved on declarative classes; the column keeps the natural name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    video_codec: Mapped[str | None] = mapped_column(String(64))
    audio_codec: Mapped[str | None] = mapped_column(String(64))
    fps: Mapped[float | None] = mapped_column(Float)
    thumbnail_key: Mapped[str | None] = mapped_column(String(KEY_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # The list page: one owner's live files, newest first (and the other sort keys).
        # Partial (live rows only) and ending in the id tie-breaker, so both the page and its
        # total count are answered from the index alone, without visiting the table.
        Index(
            "ix_files_live_owner_created_at",
            "owner",
            "created_at",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "ix_files_live_owner_filename",
            "owner",
            "filename",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # The sweeper's work queues stay small scans, not full-table ones.
        Index(None, "deleted_at"),
        Index(None, "processed_at"),
    )
