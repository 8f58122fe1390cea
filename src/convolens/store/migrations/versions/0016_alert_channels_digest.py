"""alerts: mute, a delivery's channel (webhook or e-mail); the weekly digest (opt-in per member, one row
per project and week, its deliveries)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (no batch copy: on SQLite a copy of a table others cascade from
    # would delete their rows).
    op.add_column("alert_rule", sa.Column("muted_until", sa.DateTime(), nullable=True))
    op.add_column("alert_event", sa.Column("muted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("alert_delivery", sa.Column("channel", sa.String(8), nullable=False, server_default="webhook"))
    op.add_column("membership", sa.Column("digest", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "digest_week",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("week_start", sa.DateTime(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("project_pk", "week_start", name="uq_digest_week_project_week"),
    )
    op.create_table(
        "digest_delivery",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("digest_pk", Pk, sa.ForeignKey("digest_week.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("recipient", sa.String(2000), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime()),
    )
    op.create_index("ix_digest_delivery_digest_pk", "digest_delivery", ["digest_pk"])
    op.create_index("ix_digest_delivery_due", "digest_delivery", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("digest_delivery")
    op.drop_table("digest_week")
    # Plain DROP COLUMN (SQLite 3.35+), not a batch copy (see 0012).
    op.drop_column("membership", "digest")
    op.drop_column("alert_delivery", "channel")
    op.drop_column("alert_event", "muted")
    op.drop_column("alert_rule", "muted_until")
