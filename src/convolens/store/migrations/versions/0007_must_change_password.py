"""accounts: must_change_password

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing accounts keep signing in as before: their passwords are not flagged.
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not a batch copy: on SQLite the copy drops the old account table,
    # and with foreign keys on that deletes every membership and session by cascade.
    op.drop_column("account", "must_change_password")
