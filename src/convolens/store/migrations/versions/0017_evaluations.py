"""evaluations: versioned test sets, their cases, runs and the leased work items of runs

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "test_set",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("evaluators", sa.JSON(), nullable=False),
        sa.Column("case_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("project_pk", "name", "version", name="uq_test_set_version"),
    )
    op.create_table(
        "test_case",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("test_set_pk", Pk, sa.ForeignKey("test_set.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("vector", sa.LargeBinary()),
        sa.UniqueConstraint("test_set_pk", "name", name="uq_test_case_name"),
    )
    op.create_index(
        "ix_test_case_unembedded",
        "test_case",
        ["pk"],
        sqlite_where=sa.text("vector IS NULL"),
        postgresql_where=sa.text("vector IS NULL"),
    )
    op.create_table(
        "eval_run",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(32), nullable=False, unique=True),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("test_set_pk", Pk, sa.ForeignKey("test_set.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
    )
    op.create_index("ix_eval_run_project", "eval_run", ["project_pk", "created_at"])
    op.create_table(
        "eval_item",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("run_pk", Pk, sa.ForeignKey("eval_run.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("test_case_pk", Pk, sa.ForeignKey("test_case.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("response", sa.Text()),
        sa.Column("result", sa.JSON()),
        sa.Column("passed", sa.Boolean()),
        sa.Column("finished_at", sa.DateTime()),
        sa.UniqueConstraint("run_pk", "test_case_pk", "iteration", name="uq_eval_item"),
    )
    op.create_index("ix_eval_item_open", "eval_item", ["done", "run_pk"])
    op.create_table(
        "eval_collect_rule",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("test_set_name", sa.String(128), nullable=False),
        sa.Column("topic_pk", Pk, sa.ForeignKey("topic.pk", ondelete="CASCADE")),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("keep", sa.String(8), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("collected", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_eval_collect_rule_project_pk", "eval_collect_rule", ["project_pk"])
    op.create_table(
        "online_eval_rule",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("evaluator", sa.JSON(), nullable=False),
        sa.Column("topic_pk", Pk, sa.ForeignKey("topic.pk", ondelete="CASCADE")),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_online_eval_rule_project_pk", "online_eval_rule", ["project_pk"])
    op.create_table(
        "online_eval_result",
        sa.Column("pk", Pk, primary_key=True, autoincrement=True),
        sa.Column("rule_pk", Pk, sa.ForeignKey("online_eval_rule.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("message_pk", Pk, sa.ForeignKey("message.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("conversation_pk", Pk, sa.ForeignKey("conversation.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.UniqueConstraint("rule_pk", "message_pk", name="uq_online_eval_result"),
    )
    op.create_index("ix_online_eval_result_rule_time", "online_eval_result", ["rule_pk", "created_at"])


def downgrade() -> None:
    op.drop_table("online_eval_result")
    op.drop_table("online_eval_rule")
    op.drop_table("eval_collect_rule")
    op.drop_table("eval_item")
    op.drop_table("eval_run")
    op.drop_table("test_case")
    op.drop_table("test_set")
