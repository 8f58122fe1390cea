"""conversation outcomes: outcome, outcome_signals (bitmask), outcome_version, and an index to filter by outcome

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 04:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing conversations keep NULLs until their messages are next saved (a new message, or
    # `convolens reenrich`), as their sentiment trend did.
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("outcome_signals", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("outcome_version", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_conversation_project_outcome", ["project_pk", "outcome", "last_message_at"], unique=False
        )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not a batch copy of the conversation table: on SQLite the copy
    # drops the old table, and with foreign keys on that deletes every message by cascade.
    op.drop_index("ix_conversation_project_outcome", table_name="conversation")
    for column in ("outcome_version", "outcome_signals", "outcome"):
        op.drop_column("conversation", column)
