"""alert rules, their decided windows (events) and webhook deliveries

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_rule",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("state", sa.String(8), nullable=False, server_default="ok"),
        sa.Column("last_fired_at", sa.DateTime()),
        sa.Column("evaluated_through", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_alert_rule_project_pk", "alert_rule", ["project_pk"])
    op.create_table(
        "alert_event",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("rule_pk", Pk, sa.ForeignKey("alert_rule.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("volume", sa.Integer(), nullable=False),
        sa.Column("holds", sa.Boolean()),
        sa.Column("event", sa.String(12)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("rule_pk", "window_start", name="uq_alert_event_rule_window"),
    )
    op.create_index("ix_alert_event_project_event", "alert_event", ["project_pk", "event", "window_start"])
    op.create_table(
        "alert_delivery",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("event_pk", Pk, sa.ForeignKey("alert_event.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
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
    op.create_index("ix_alert_delivery_event_pk", "alert_delivery", ["event_pk"])
    op.create_index("ix_alert_delivery_due", "alert_delivery", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("alert_delivery")
    op.drop_table("alert_event")
    op.drop_table("alert_rule")
