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
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("must_change_password")
