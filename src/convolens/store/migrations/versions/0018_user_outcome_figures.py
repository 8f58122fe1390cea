"""user figures: each user's conversations by outcome (resolved, unresolved, abandoned), kept running

The users page counted the outcomes of its listed users' conversations at every view: for a user with
half a million conversations (a shared "anonymous" id, a bot) that was 0.7-1.9 s at 5 million messages.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

OUTCOMES = ("resolved", "unresolved", "abandoned")


def upgrade() -> None:
    for table in ("user_figures", "user_day_figures"):
        for name in OUTCOMES:
            op.add_column(table, sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    # The stored days get their counts in one grouped pass over the conversations (a conversation counts on
    # the day it started, in its latest outcome, as in the rollups), and each user's totals are the sum of
    # their days, so that a day the worker redoes later adds exactly its difference.
    day = (
        "substr(c.started_at, 1, 10)"
        if op.get_bind().dialect.name == "sqlite"
        else "to_char(c.started_at, 'YYYY-MM-DD')"
    )
    sums = ", ".join(f"sum(CASE WHEN c.outcome = '{o}' THEN 1 ELSE 0 END) AS {o}" for o in OUTCOMES)
    sets = ", ".join(f"{o} = s.{o}" for o in OUTCOMES)
    op.execute(
        f"UPDATE user_day_figures SET {sets} FROM ("
        f"SELECT c.project_pk, c.end_user_pk, {day} AS day, {sums} FROM conversation AS c"
        " WHERE c.end_user_pk IS NOT NULL AND c.outcome IN ('resolved', 'unresolved', 'abandoned')"
        f" GROUP BY c.project_pk, c.end_user_pk, {day}) AS s"
        " WHERE user_day_figures.project_pk = s.project_pk AND user_day_figures.end_user_pk = s.end_user_pk"
        " AND user_day_figures.day = s.day"
    )
    totals = ", ".join(f"sum(d.{o}) AS {o}" for o in OUTCOMES)
    op.execute(
        f"UPDATE user_figures SET {sets} FROM ("
        f"SELECT d.end_user_pk, {totals} FROM user_day_figures AS d GROUP BY d.end_user_pk) AS s"
        " WHERE user_figures.end_user_pk = s.end_user_pk"
    )


def downgrade() -> None:
    for table in ("user_day_figures", "user_figures"):
        for name in OUTCOMES:
            op.drop_column(table, name)
