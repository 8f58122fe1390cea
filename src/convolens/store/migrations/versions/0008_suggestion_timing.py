"""suggestion timing: what the last run of suggested topics read, and when a worker last counted

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 04:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep last_pool NULL: such a project runs once more as soon as it has enough uncovered
    # messages (as a new one would), and from then on as its pool grows.
    with op.batch_alter_table("suggestion_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_pool", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("last_message_pk", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("suggestion_run", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
        batch_op.drop_column("last_message_pk")
        batch_op.drop_column("last_pool")
