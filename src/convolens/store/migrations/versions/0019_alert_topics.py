"""alerts: the topics an emerging-topics rule has told of (each once per rule), and what a window's event
was about (its topics), kept on the event for the history and the message

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy: on SQLite a copy of a table others cascade from would delete their rows).
    op.add_column("alert_event", sa.Column("detail", sa.JSON(), nullable=True))
    op.create_table(
        "alert_topic",
        sa.Column("rule_pk", Pk, sa.ForeignKey("alert_rule.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("topic_pk", Pk, nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule_pk", "topic_pk", name="pk_alert_topic"),
    )


def downgrade() -> None:
    op.drop_table("alert_topic")
    op.drop_column("alert_event", "detail")
