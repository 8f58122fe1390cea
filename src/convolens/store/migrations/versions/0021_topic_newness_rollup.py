"""topic newness: per day and active topic, the links from users in their first week and from returning users

The users page's "topics of new and returning users" joined the window's topic links to their users at
every view: about 250 ms of the page at 5 million messages (30 days), growing with the window's traffic.
The rollup worker now keeps the counts per day (store/topic_newness.py); this fills them for the links
already stored, in one grouped pass, with the definition of ``topic_newness.count_links``.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NEW_USER_DAYS = 7


def upgrade() -> None:
    op.create_table(
        "topic_day_newness",
        sa.Column("project_pk", Pk, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("topic_pk", Pk, nullable=False),
        sa.Column("new_links", sa.Integer(), nullable=False),
        sa.Column("returning_links", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["topic_pk"], ["topic.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_pk", "day", "topic_pk"),
    )
    op.create_index("ix_topic_day_newness_topic", "topic_day_newness", ["topic_pk"])
    if op.get_bind().dialect.name == "sqlite":
        day = "substr(mt.created_at, 1, 10)"
        week_on = f"strftime('%Y-%m-%d %H:%M:%f', u.first_seen, '+{NEW_USER_DAYS} days')"
    else:
        day = "to_char(mt.created_at, 'YYYY-MM-DD')"
        week_on = f"u.first_seen + interval '{NEW_USER_DAYS} days'"
    is_new = f"CASE WHEN mt.created_at < {week_on} THEN 1 ELSE 0 END"
    op.execute(
        "INSERT INTO topic_day_newness (project_pk, day, topic_pk, new_links, returning_links)"
        f" SELECT mt.project_pk, {day}, mt.topic_pk, sum({is_new}), sum(1 - {is_new})"
        " FROM message_topic AS mt JOIN topic AS t ON t.pk = mt.topic_pk AND t.status = 'active'"
        " JOIN conversation AS c ON c.pk = mt.conversation_pk JOIN end_user AS u ON u.pk = c.end_user_pk"
        f" GROUP BY mt.project_pk, {day}, mt.topic_pk"
    )


def downgrade() -> None:
    op.drop_index("ix_topic_day_newness_topic", table_name="topic_day_newness")
    op.drop_table("topic_day_newness")
