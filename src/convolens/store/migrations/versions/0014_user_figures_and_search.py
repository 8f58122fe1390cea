"""user figures (running per-user totals for the users page) and a transcript search index

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 07:00:00
"""

import logging
import sqlite3
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)
Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FIGURES = (
    ("conversations", sa.Integer),
    ("messages", sa.Integer),
    ("sentiment_sum", sa.Float),
    ("sentiment_count", sa.Integer),
    ("rated", sa.Integer),
    ("rating_sum", sa.Integer),
)


def upgrade() -> None:
    op.create_table(
        "user_figures",
        sa.Column("end_user_pk", Pk, nullable=False),
        sa.Column("project_pk", Pk, nullable=False),
        *[sa.Column(name, kind(), nullable=False) for name, kind in FIGURES],
        sa.Column("avg_sentiment", sa.Float(), nullable=True),
        sa.Column("avg_rating", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["end_user_pk"], ["end_user.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("end_user_pk"),
    )
    for name, column in (
        ("conversations", "conversations"),
        ("messages", "messages"),
        ("sentiment", "avg_sentiment"),
        ("rating", "avg_rating"),
    ):
        op.create_index(f"ix_user_figures_project_{name}", "user_figures", ["project_pk", column])
    op.create_table(
        "user_day_figures",
        sa.Column("project_pk", Pk, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("end_user_pk", Pk, nullable=False),
        *[sa.Column(name, kind(), nullable=False) for name, kind in FIGURES],
        sa.ForeignKeyConstraint(["end_user_pk"], ["end_user.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_pk"], ["project.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_pk", "day", "end_user_pk"),
    )
    op.create_index("ix_user_day_figures_user", "user_day_figures", ["end_user_pk"])
    # Every day with rollups is marked, so that the worker fills the users' figures as it redoes them
    # (the difference to "no figures yet" is the whole day). Until then the page shows zeros.
    bind = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)
    bind.execute(
        sa.text(
            "INSERT INTO rollup_dirty (project_pk, day, marked_at)"
            " SELECT DISTINCT project_pk, day, :now FROM rollup WHERE dimension = 'none'"
            # 0013 has marked them already where it ran in the same upgrade: one mark a day is enough
            " AND NOT EXISTS (SELECT 1 FROM rollup_dirty AS d WHERE d.project_pk = rollup.project_pk"
            " AND d.day = rollup.day)"
        ),
        {"now": now},
    )
    if bind.dialect.name == "sqlite":
        _sqlite_search_up()
    else:
        _postgresql_search_up(bind)


# What the index holds: messages (not custom events) once enriched. Not at ingest: trigram indexing costs
# ~8 times the rest of the store's write of a message (SQLite, measured), and ingest is the hot path; the
# enrichment worker rewrites every message row anyway. Messages not enriched yet are searched by a scan of
# the pending ones (store/search.py), which the pending-message index keeps short.
_INDEXED_OLD = "old.enriched_version IS NOT NULL AND old.kind != 'event'"
_INDEXED_NEW = "new.enriched_version IS NOT NULL AND new.kind != 'event'"


def _sqlite_search_up() -> None:
    # FTS5 over message.content (an external-content index: the text is not stored twice), trigram
    # tokens so that any substring of 3+ characters matches, in scripts without spaces between words too.
    # Triggers keep it in step with every enrichment, delete (erasure, retention, cascades) and edit.
    # It holds each message's first 20,000 characters, the part enrichment reads too: indexing happens in
    # the worker's save, under the write lock the API's writes wait for, and a crafted 90,000-character
    # text cost ~17 ms there (store/search.py INDEXED_CHARS; the delete must give the same text).
    op.execute(
        "CREATE VIRTUAL TABLE message_search USING fts5("
        "content, content='message', content_rowid='pk', tokenize='trigram')"
    )
    if sqlite3.sqlite_version_info >= (3, 44):
        # A deleted row's tokens are removed from the index's pages at once, not only marked deleted until
        # FTS5 next merges the segment (erasure: store/erasure.py). Older SQLite has no such option.
        op.execute("INSERT INTO message_search (message_search, rank) VALUES ('secure-delete', 1)")
    op.execute(
        "INSERT INTO message_search (rowid, content) SELECT pk, substr(content, 1, 20000) FROM message"
        " WHERE enriched_version IS NOT NULL AND kind != 'event'"
    )
    # No trigger on insert: ingest writes messages not enriched yet, and even a trigger whose WHEN is false
    # cost 14 µs a message (SQLite builds the new row's record for it): 75% more store time a batch.
    # Rows written already enriched by a bulk loader are indexed with store/search.index_loaded.
    op.execute(
        f"CREATE TRIGGER message_search_delete AFTER DELETE ON message WHEN {_INDEXED_OLD} BEGIN"
        " INSERT INTO message_search (message_search, rowid, content) VALUES ('delete', old.pk, substr(old.content, 1, 20000));"
        " END"
    )
    # Enriched (or queued again by `convolens reenrich`), or its text or kind changed; a version bump alone
    # leaves the index as it is.
    op.execute(
        "CREATE TRIGGER message_search_update AFTER UPDATE OF content, kind, enriched_version ON message"
        " WHEN (old.enriched_version IS NULL) != (new.enriched_version IS NULL)"
        " OR old.content IS NOT new.content OR old.kind IS NOT new.kind BEGIN"
        " INSERT INTO message_search (message_search, rowid, content)"
        f" SELECT 'delete', old.pk, substr(old.content, 1, 20000) WHERE {_INDEXED_OLD};"
        f" INSERT INTO message_search (rowid, content) SELECT new.pk, substr(new.content, 1, 20000) WHERE {_INDEXED_NEW};"
        " END"
    )


def _postgresql_search_up(bind: sa.Connection) -> None:
    # pg_trgm is a trusted extension (PostgreSQL 13+): a role with CREATE on the database may install it.
    # Where it cannot (an older server, a locked-down role), search keeps working as a scan of the
    # messages, as before this revision (store/search.py).
    savepoint = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        savepoint.commit()
    except sa.exc.DBAPIError as error:
        savepoint.rollback()
        log.warning("pg_trgm is not available (%s): transcript search scans the messages", error.orig)
        return
    # Partial, as on SQLite: the enrichment worker's update (already not a HOT update: the pending index's
    # predicate changes) adds the entry, not the ingest's COPY.
    op.execute(
        "CREATE INDEX ix_message_content_trgm ON message USING gin (content gin_trgm_ops)"
        " WHERE enriched_version IS NOT NULL AND kind <> 'event'"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS message_search_{trigger}")
        op.execute("DROP TABLE IF EXISTS message_search")
    else:
        # The extension stays: other databases' objects may use it, and it holds no data.
        op.execute("DROP INDEX IF EXISTS ix_message_content_trgm")
    op.drop_index("ix_user_day_figures_user", table_name="user_day_figures")
    op.drop_table("user_day_figures")
    for name in ("conversations", "messages", "sentiment", "rating"):
        op.drop_index(f"ix_user_figures_project_{name}", table_name="user_figures")
    op.drop_table("user_figures")
