"""rollup outcomes: conversations per outcome in each rollup row, and every rolled-up day marked to be redone

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 06:40:00
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both backends (nullable: a row without it counts no outcome).
    op.add_column("rollup", sa.Column("outcomes", sa.JSON(), nullable=True))
    # Days rolled up before this revision hold no outcome counts: marking them makes the rollup worker
    # redo them (and readers summarize them live until it has), so no figure reads as zero meanwhile.
    op.get_bind().execute(
        sa.text(
            "INSERT INTO rollup_dirty (project_pk, day, marked_at) SELECT DISTINCT project_pk, day, :now FROM rollup"
        ).bindparams(sa.bindparam("now", type_=sa.DateTime())),
        {"now": datetime.now(UTC).replace(tzinfo=None)},
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), no batch copy of the table (see 0012).
    op.drop_column("rollup", "outcomes")
