"""suggestion LLM names: the naming requests a project made today, for the daily cap

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 05:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The descriptions live in the suggestion's definition (JSON), like a semantic topic's: no column.
    with op.batch_alter_table("suggestion_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("llm_day", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("llm_calls", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("suggestion_run", schema=None) as batch_op:
        batch_op.drop_column("llm_calls")
        batch_op.drop_column("llm_day")
