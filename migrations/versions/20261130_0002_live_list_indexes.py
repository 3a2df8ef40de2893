"""list indexes over live rows only, ending in the id tie-breaker

The owner's page and its total count were read through the table (to test deleted_at): on
100,000 rows SQLite spent about 200 ms counting. Partial indexes answer both from the index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_owner_created_at")
        batch.drop_index("ix_files_owner_filename")
        batch.create_index(
            "ix_files_live_owner_created_at",
            ["owner", "created_at", "id"],
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        )
        batch.create_index(
            "ix_files_live_owner_filename",
            ["owner", "filename", "id"],
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        )


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_live_owner_filename")
        batch.drop_index("ix_files_live_owner_created_at")
        batch.create_index("ix_files_owner_created_at", ["owner", "created_at"])
        batch.create_index("ix_files_owner_filename", ["owner", "filename"])
