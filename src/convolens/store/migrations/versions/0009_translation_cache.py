"""translation: the cache of translated texts and each project's daily count of texts sent for translation

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 04:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # message.translation exists since 0001; these two only make it cheap and bounded to fill.
    op.create_table(
        "translation_cache",
        sa.Column("project_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("target_language", sa.String(length=8), nullable=False),
        sa.Column("translation", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_pk", "text_hash", "target_language"),
    )
    op.create_table(
        "translation_usage",
        sa.Column("project_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("texts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_pk", "day"),
    )


def downgrade() -> None:
    op.drop_table("translation_usage")
    op.drop_table("translation_cache")
