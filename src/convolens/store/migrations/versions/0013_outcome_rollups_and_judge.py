"""outcome rollups and the LLM outcome judge: conversations per outcome in each rollup row (every day
rolled up before marked to be redone); who gave a conversation its outcome (rules or llm), the judge's reason
and when it took the conversation, with an index to find those it has yet to judge; the judge's daily usage

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
    # Plain ADD COLUMNs, no batch copy of the conversation table (see 0012's downgrade).
    op.add_column("conversation", sa.Column("outcome_by", sa.String(length=8), nullable=True))
    op.add_column("conversation", sa.Column("outcome_reason", sa.String(length=500), nullable=True))
    op.add_column("conversation", sa.Column("outcome_judged_at", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_conversation_project_outcome_by", "conversation", ["project_pk", "outcome_by", "last_message_at"]
    )
    op.create_table(
        "outcome_judge_usage",
        sa.Column("project_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_pk", "day"),
    )
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
    op.drop_table("outcome_judge_usage")
    op.drop_index("ix_conversation_project_outcome_by", table_name="conversation")
    for column in ("outcome_judged_at", "outcome_reason", "outcome_by"):
        op.drop_column("conversation", column)
    op.drop_column("rollup", "outcomes")
