"""message.enrich_attempts: how many times the enrichment queue handed a message out

A message whose enrichment always failed was claimed again each time its lease lapsed, forever, and its
project's newer messages queued behind it (store/enrichment.py sets such a message aside after
MAX_ATTEMPTS). Nullable without a default: adding it rewrites no row on either backend.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both backends (SQLite >= 3.35 drops a column in place): a batch copy of the message
# table would rewrite every row and drop its search triggers.
def upgrade() -> None:
    op.add_column("message", sa.Column("enrich_attempts", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("message", "enrich_attempts")
