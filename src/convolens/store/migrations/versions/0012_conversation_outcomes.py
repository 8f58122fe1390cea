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
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_project_outcome")
        batch_op.drop_column("outcome_version")
        batch_op.drop_column("outcome_signals")
        batch_op.drop_column("outcome")
