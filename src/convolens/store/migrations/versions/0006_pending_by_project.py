"""pending messages by project, for the fair claim

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 03:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_pending_project",
            ["project_pk", "pk"],
            unique=False,
            sqlite_where=sa.text("enriched_version IS NULL"),
            postgresql_where=sa.text("enriched_version IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_message_pending_project",
            sqlite_where=sa.text("enriched_version IS NULL"),
            postgresql_where=sa.text("enriched_version IS NULL"),
        )
