"""topic categories: a category table, and each topic's category

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 04:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "topic_category",
        sa.Column("pk", Pk, autoincrement=True, nullable=False),
        sa.Column("project_pk", Pk, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("centroid", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_topic_category_project", "topic_category", ["project_pk"])
    # A plain ADD COLUMN, not a batch copy of the topic table: on SQLite the copy would drop the old
    # table, and with foreign keys on that deletes every message_topic row by cascade. SQLite takes the
    # reference in the column's definition (alembic cannot add the constraint there). Existing topics
    # start uncategorised; the next clustering run puts the suggestions in categories.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE topic ADD COLUMN category_pk INTEGER REFERENCES topic_category (pk) ON DELETE SET NULL")
    else:
        op.add_column("topic", sa.Column("category_pk", Pk, nullable=True))
        op.create_foreign_key(
            "fk_topic_category", "topic", "topic_category", ["category_pk"], ["pk"], ondelete="SET NULL"
        )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # The batch copy drops the old topic table, and the drop deletes every match by cascade (the
        # pragma that would stop it is ignored inside the migration's transaction): keep them aside.
        op.execute("CREATE TEMP TABLE kept_message_topic AS SELECT * FROM message_topic")
    with op.batch_alter_table("topic", schema=None) as batch_op:
        batch_op.drop_column("category_pk")
    if sqlite:
        op.execute("INSERT INTO message_topic SELECT * FROM kept_message_topic")
        op.execute("DROP TABLE kept_message_topic")
    op.drop_index("ix_topic_category_project", table_name="topic_category")
    op.drop_table("topic_category")
