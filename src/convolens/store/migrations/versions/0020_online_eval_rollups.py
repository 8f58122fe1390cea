"""online evaluation rollups and the daily allowance of LLM-judged replies

Online evaluation kept one row per judged reply and counted them at every read; the counts now live in
a rollup (per rule, day, topic and model: evaluated / passed / inconclusive / over budget), added to in
the transaction that stores the outcomes, so a reply deleted by retention still counts. LLM evaluators
run online within a per-project daily allowance, counted in ``online_eval_usage``.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "online_eval_rollup",
        sa.Column("rule_pk", Pk, sa.ForeignKey("online_eval_rule.pk", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("topic_pk", sa.BigInteger(), primary_key=True),  # 0: every reply, whatever its topics
        sa.Column("model", sa.String(128), primary_key=True),  # '': no model logged
        sa.Column("evaluated", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("passed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("inconclusive", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("over_budget", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "online_eval_usage",
        sa.Column("project_pk", Pk, sa.ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("replies", sa.Integer(), nullable=False),
    )
    # What was judged before this revision, counted into the rollup (every reply under topic 0, and once
    # under each topic of its conversation).
    day = "substr(CAST(r.created_at AS TEXT), 1, 10)"
    counts = (
        "count(*), sum(CASE WHEN r.outcome = 'positive' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN r.outcome = 'inconclusive' THEN 1 ELSE 0 END), 0"
    )
    op.execute(
        "INSERT INTO online_eval_rollup (rule_pk, day, topic_pk, model, evaluated, passed, inconclusive, over_budget)"
        f" SELECT r.rule_pk, {day}, 0, coalesce(r.model, ''), {counts} FROM online_eval_result r"
        f" GROUP BY r.rule_pk, {day}, coalesce(r.model, '')"
    )
    op.execute(
        "INSERT INTO online_eval_rollup (rule_pk, day, topic_pk, model, evaluated, passed, inconclusive, over_budget)"
        f" SELECT r.rule_pk, {day}, mt.topic_pk, coalesce(r.model, ''), {counts} FROM online_eval_result r"
        " JOIN (SELECT DISTINCT conversation_pk, topic_pk FROM message_topic) mt"
        " ON mt.conversation_pk = r.conversation_pk"
        f" GROUP BY r.rule_pk, {day}, mt.topic_pk, coalesce(r.model, '')"
    )


def downgrade() -> None:
    op.drop_table("online_eval_usage")
    op.drop_table("online_eval_rollup")
