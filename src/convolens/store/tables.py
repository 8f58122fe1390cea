"""SQLAlchemy Core tables: the schema both backends share. Alembic migrations create and upgrade it.

Times are stored as naive UTC datetimes on both backends so that comparisons and buckets behave alike.
Internal integer keys (``pk``) join the tables; the client-visible ids are unique per project.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
Pk = BigInteger().with_variant(Integer(), "sqlite")

project = Table(
    "project",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("settings", JSON, nullable=False, default=dict),
)

api_token = Table(
    "api_token",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("label", String(128)),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
    Column("revoked_at", DateTime),
)

end_user = Table(
    "end_user",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("external_id", String(128), nullable=False),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("properties", JSON),
    UniqueConstraint("project_pk", "external_id", name="uq_end_user_project_external"),
    # New users per week and cohorts, and the users page sorted by first or last activity.
    Index("ix_end_user_project_first_seen", "project_pk", "first_seen"),
    Index("ix_end_user_project_last_seen", "project_pk", "last_seen"),
)

conversation = Table(
    "conversation",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("id", String(128), nullable=False),
    Column("tenant_id", String(128)),
    Column("end_user_pk", ForeignKey("end_user.pk", ondelete="SET NULL")),
    Column("metadata", JSON),
    Column("feedback", Text),
    Column("started_at", DateTime, nullable=False),
    Column("last_message_at", DateTime, nullable=False),
    Column("message_count", Integer, nullable=False, default=0),
    # Context's upsert: a hash of the metadata and first two messages finds the conversation to continue.
    Column("upsert_key", String(64)),
    Column("created_at", DateTime, nullable=False),
    Column("sentiment_trend", String(8)),
    # Were users helped (enrich/outcomes.py): resolved/unresolved/abandoned/unknown, the signals behind it as
    # a bitmask (store/outcome_fields.py) and the version of the rules that set them; refreshed on each save.
    Column("outcome", String(16)),
    Column("outcome_signals", Integer),
    Column("outcome_version", Integer),
    # Who set the outcome: "rules" (enrich/outcomes.py, on every save), "judging" (an LLM judge took it
    # at outcome_judged_at) or "llm" (the judge's verdict, with its one-sentence reason).
    Column("outcome_by", String(8)),
    Column("outcome_reason", String(500)),
    Column("outcome_judged_at", DateTime),
    UniqueConstraint("project_pk", "id", name="uq_conversation_project_id"),
    # started_at too, so that the activity window (last_message_at >= start, started_at <= end) is answered
    # from the index alone: counting a month of a million conversations, 150 ms without it.
    Index("ix_conversation_project_last", "project_pk", "last_message_at", "started_at"),
    Index("ix_conversation_project_started", "project_pk", "started_at"),
    Index("ix_conversation_project_tenant_last", "project_pk", "tenant_id", "last_message_at"),
    Index("ix_conversation_project_upsert", "project_pk", "upsert_key"),
    # The filter by outcome ("show me the unresolved ones"), newest first.
    Index("ix_conversation_project_outcome", "project_pk", "outcome", "last_message_at"),
    # The conversations an LLM judge has yet to read, newest first, without scanning those it has.
    Index("ix_conversation_project_outcome_by", "project_pk", "outcome_by", "last_message_at"),
    # Conversations and messages per user (the users page) from the index alone.
    Index("ix_conversation_project_user", "project_pk", "end_user_pk", "message_count"),
)

message = Table(
    "message",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("conversation_pk", ForeignKey("conversation.pk", ondelete="CASCADE"), nullable=False),
    Column("id", String(128), nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(128)),
    Column("content", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("ingested_at", DateTime, nullable=False),
    Column("metadata", JSON),
    Column("extra", JSON),
    Column("rating", SmallInteger),
    Column("model", String(128)),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("latency_ms", Float),
    Column("error", Text),
    # Filled by the enrichment worker; NULL until then.
    Column("language", String(8)),
    Column("translation", Text),
    Column("sentiment", Float),
    Column("sentiment_label", String(8)),
    Column("enriched_version", Integer),
    # A worker's claim on the message while it enriches it; an expired lease is free to take again.
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime),
    # How many times the enrichment queue handed this message out (store/enrichment.py: MAX_ATTEMPTS).
    Column("enrich_attempts", SmallInteger),
    UniqueConstraint("project_pk", "id", name="uq_message_project_id"),
    Index("ix_message_conversation_position", "conversation_pk", "position"),
    Index("ix_message_project_created", "project_pk", "created_at"),
    # Only pending messages are in it, so finding work stays cheap however large the table grows.
    Index(
        "ix_message_pending",
        "pk",
        sqlite_where=text("enriched_version IS NULL"),
        postgresql_where=text("enriched_version IS NULL"),
    ),
    # The same by project: the claim finds which projects have pending work (one index step each) and
    # takes each one's oldest, so one project's backlog never queues another's messages behind it.
    Index(
        "ix_message_pending_project",
        "project_pk",
        "pk",
        sqlite_where=text("enriched_version IS NULL"),
        postgresql_where=text("enriched_version IS NULL"),
    ),
)

# One vector per enriched user message (float16, 1 KiB), apart from the message rows so that scans of
# messages stay lean; the clustering of suggested topics reads them back by project.
message_embedding = Table(
    "message_embedding",
    metadata,
    Column("message_pk", ForeignKey("message.pk", ondelete="CASCADE"), primary_key=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Index("ix_message_embedding_project", "project_pk", "message_pk"),
)

# A group of topics, so that a project's map reads at two levels: a handful of categories first, their
# topics on drilling down. The clustering of suggestions computes them (store/suggestions.py keeps a
# category's pk while most of its topics stay); an admin may put a defined topic in one.
topic_category = Table(
    "topic_category",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("centroid", LargeBinary),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_topic_category_project", "project_pk"),
)

topic = Table(
    "topic",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    # keyword | semantic | llm | suggested
    Column("kind", String(16), nullable=False),
    # active (matched), or for suggestions: suggested (matched, shown as a suggestion) | dismissed
    Column("status", String(16), nullable=False),
    Column("definition", JSON, nullable=False),
    # The cluster centre of a suggestion (float16), kept when it is accepted.
    Column("centroid", LargeBinary),
    # Sample conversation ids of a suggestion, and its size when it was found.
    Column("samples", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # Applying a new or changed topic to messages stored before it: message keys up to backfill_until,
    # done up to backfill_cursor, leased like the message queue so any worker can take it over.
    Column("backfill_cursor", BigInteger, nullable=False, default=0),
    Column("backfill_until", BigInteger, nullable=False, default=0),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime),
    # Its category; NULL: uncategorised.
    Column("category_pk", ForeignKey("topic_category.pk", ondelete="SET NULL")),
    Index("ix_topic_project", "project_pk", "status"),
)

message_topic = Table(
    "message_topic",
    metadata,
    Column("message_pk", ForeignKey("message.pk", ondelete="CASCADE"), primary_key=True),
    Column("topic_pk", ForeignKey("topic.pk", ondelete="CASCADE"), primary_key=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("conversation_pk", ForeignKey("conversation.pk", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("score", Float, nullable=False),
    Column("reason", Text),
    Index("ix_message_topic_topic", "topic_pk", "created_at"),
    # (conversation, topic): the explorer's "conversations about topic T" is one probe per conversation.
    Index("ix_message_topic_conversation_topic", "conversation_pk", "topic_pk"),
)

# When the suggested topics of a project were last recomputed, and which worker is at it now.
suggestion_run = Table(
    "suggestion_run",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("last_run_at", DateTime),
    Column("requested_at", DateTime),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime),
    # What the last run read: how many uncovered messages, and the newest of them; the next run is due
    # when enough new ones arrived since (store/suggestions.py). When a worker last counted, so that
    # workers count a project at most every few seconds.
    Column("last_pool", Integer),
    Column("last_message_pk", BigInteger),
    Column("checked_at", DateTime),
    # LLM names of suggested topics: the requests made on llm_day (UTC, YYYY-MM-DD), for the daily cap.
    Column("llm_day", String(10)),
    Column("llm_calls", Integer),
)

client_report = Table(
    "client_report",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("sdk", String(64)),
    Column("dropped", Integer, nullable=False),
    Column("retries", Integer, nullable=False),
)

# Figures per project x tenant scope x dimension x UTC day x value (store/rollups.py says what is in
# them and how they stay current). ``scope`` is ``*`` for every tenant together, ``t:<tenant>`` or ``-``.
rollup = Table(
    "rollup",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("scope", String(160), primary_key=True),
    Column("dimension", String(16), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("value", String(160), primary_key=True),
    Column("messages", Integer, nullable=False),
    Column("user_messages", Integer, nullable=False),
    Column("sentiment_sum", Float, nullable=False),
    Column("sentiment_count", Integer, nullable=False),
    Column("ratings_up", Integer, nullable=False),
    Column("ratings_down", Integer, nullable=False),
    Column("rated", Integer, nullable=False),
    Column("rating_sum", Integer, nullable=False),
    Column("conversations_started", Integer, nullable=False),
    # {model: [input tokens, output tokens]}: costs are priced when read, so a new price applies at once.
    Column("tokens", JSON),
    # {outcome: conversations}: the conversations that *started* this day, each in its latest outcome.
    Column("outcomes", JSON),
    Column("conversation_count", Integer, nullable=False),
    Column("user_count", Integer, nullable=False),
    Column("conversation_set", LargeBinary, nullable=False),
    Column("user_set", LargeBinary, nullable=False),
)

# A day whose rollups are behind: one row per writing transaction, deleted by the worker that redid it.
rollup_dirty = Table(
    "rollup_dirty",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("day", String(10), nullable=False),
    Column("marked_at", DateTime, nullable=False),
    Index("ix_rollup_dirty_project_day", "project_pk", "day"),
)

# Which worker is redoing a day, and how long that took last time (a slow day waits longer between runs).
rollup_state = Table(
    "rollup_state",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime),
    Column("refreshed_at", DateTime),
    Column("refresh_seconds", Float, nullable=False, default=0.0),
)

# Each end user's running figures for the users page (store/user_figures.py): kept by the rollup worker as
# the sum of the user's day rows below, so that sorting by an average reads one row per user, not every
# message of the project. First and last seen stay on ``end_user`` (ingest keeps them).
user_figures = Table(
    "user_figures",
    metadata,
    Column("end_user_pk", ForeignKey("end_user.pk", ondelete="CASCADE"), primary_key=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("conversations", Integer, nullable=False),
    Column("messages", Integer, nullable=False),
    Column("sentiment_sum", Float, nullable=False),
    Column("sentiment_count", Integer, nullable=False),
    Column("rated", Integer, nullable=False),
    Column("rating_sum", Integer, nullable=False),
    # Conversations by latest outcome, on the day they started (the unresolved share without counting).
    Column("resolved", Integer, nullable=False, server_default="0"),
    Column("unresolved", Integer, nullable=False, server_default="0"),
    Column("abandoned", Integer, nullable=False, server_default="0"),
    # Kept with the sums so that the page sorts by them from an index.
    Column("avg_sentiment", Float),
    Column("avg_rating", Float),
    Index("ix_user_figures_project_conversations", "project_pk", "conversations"),
    Index("ix_user_figures_project_messages", "project_pk", "messages"),
    Index("ix_user_figures_project_sentiment", "project_pk", "avg_sentiment"),
    Index("ix_user_figures_project_rating", "project_pk", "avg_rating"),
)

# A user's figures of one UTC day, as the rollup worker last computed that day: the difference to the
# day's new figures is what it adds to ``user_figures`` when it redoes the day.
user_day_figures = Table(
    "user_day_figures",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("end_user_pk", ForeignKey("end_user.pk", ondelete="CASCADE"), primary_key=True),
    Column("conversations", Integer, nullable=False),
    Column("messages", Integer, nullable=False),
    Column("sentiment_sum", Float, nullable=False),
    Column("sentiment_count", Integer, nullable=False),
    Column("rated", Integer, nullable=False),
    Column("rating_sum", Integer, nullable=False),
    Column("resolved", Integer, nullable=False, server_default="0"),
    Column("unresolved", Integer, nullable=False, server_default="0"),
    Column("abandoned", Integer, nullable=False, server_default="0"),
    Index("ix_user_day_figures_user", "end_user_pk"),
)

# Per day and active topic, its links from users in their first week and from returning users
# (store/topic_newness.py): the users page's "topics of new and returning users" reads O(days x topics)
# rows instead of joining the window's topic links to their users. Kept by the rollup worker with the
# same marks, one day at a time.
topic_day_newness = Table(
    "topic_day_newness",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("topic_pk", ForeignKey("topic.pk", ondelete="CASCADE"), primary_key=True),
    Column("new_links", Integer, nullable=False),
    Column("returning_links", Integer, nullable=False),
    Index("ix_topic_day_newness_topic", "topic_pk"),
)

# -- the dashboard's people: accounts (argon2 password hashes), their role per project, their sessions --

account = Table(
    "account",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
    # Set for a password someone else chose (an admin, or generated): its owner must replace it first.
    Column("must_change_password", Boolean, nullable=False, server_default=false()),
)

membership = Table(
    "membership",
    metadata,
    Column("account_pk", ForeignKey("account.pk", ondelete="CASCADE"), primary_key=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    # viewer (reads) | member (also manages topics) | admin (also tokens, members, settings)
    Column("role", String(16), nullable=False),
    # The weekly digest by e-mail: each member opts in for themselves (worker/digest.py).
    Column("digest", Boolean, nullable=False, server_default=false()),
)

# A signed-in browser: the cookie carries a random token, the row its SHA-256 and the CSRF token of its forms.
web_session = Table(
    "web_session",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_pk", ForeignKey("account.pk", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_web_session_account", "account_pk"),
)

# -- translation (enrich/translate.py): a cache, so that a text repeated across messages is translated once,
# and what each project sent to its provider each day, so that the daily cap holds across workers --

translation_cache = Table(
    "translation_cache",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    # SHA-256 (hex) of the message text as stored (after PII scrubbing).
    Column("text_hash", String(64), primary_key=True),
    Column("target_language", String(8), primary_key=True),
    Column("translation", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# Conversations an LLM outcome judge read per project and UTC day (store/outcome_judge.py): the daily cap.
outcome_judge_usage = Table(
    "outcome_judge_usage",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("conversations", Integer, nullable=False),
)

translation_usage = Table(
    "translation_usage",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    # Texts sent to the provider that UTC day (cache hits are free and not counted).
    Column("texts", Integer, nullable=False),
)

# -- alerts (store/alerts.py) ----------------------------------------------------------------------------

# A rule: what to watch (``definition``: metric, filter, condition, window, cooldown, channel) and where
# its evaluation stands. ``evaluated_through`` (the start of the last window decided) moves by
# compare-and-set, so that of several workers exactly one decides each window.
alert_rule = Table(
    "alert_rule",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("secret", String(64), nullable=False),  # signs the webhook bodies (HMAC-SHA256)
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("state", String(8), nullable=False, server_default="ok"),  # ok | firing
    Column("last_fired_at", DateTime),  # the end of the window that last fired (the cooldown counts from it)
    Column("evaluated_through", DateTime),
    # Until then the rule is still decided (its state stays true) but nothing is sent.
    Column("muted_until", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# One row per (rule, window) decided: the value seen and what it caused (fired, resolved, suppressed by the
# cooldown, or nothing). The unique key is the second guard against a window decided twice.
alert_event = Table(
    "alert_event",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("rule_pk", ForeignKey("alert_rule.pk", ondelete="CASCADE"), nullable=False),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("window_start", DateTime, nullable=False),
    Column("window_end", DateTime, nullable=False),
    Column("value", Float),
    Column("volume", Integer, nullable=False),
    Column("holds", Boolean),  # null: not decidable (too little volume or history)
    Column("event", String(12)),  # fired | resolved | suppressed | null
    Column("muted", Boolean, nullable=False, server_default=false()),  # decided while muted: nothing sent
    Column("created_at", DateTime, nullable=False),
    Column("detail", JSON),  # {"topics": [{"id", "name"}]}: what an emerging-topics window was about
    UniqueConstraint("rule_pk", "window_start", name="uq_alert_event_rule_window"),
    Index("ix_alert_event_project_event", "project_pk", "event", "window_start"),
)

# The topics an ``emerging_topics`` rule has told of: the key makes it once per topic and rule, whichever
# worker decides. No foreign key to the topic: a suggestion a later clustering run drops is still told.
alert_topic = Table(
    "alert_topic",
    metadata,
    Column("rule_pk", ForeignKey("alert_rule.pk", ondelete="CASCADE"), nullable=False),
    Column("topic_pk", Pk, nullable=False),
    Column("window_start", DateTime, nullable=False),
    PrimaryKeyConstraint("rule_pk", "topic_pk", name="pk_alert_topic"),
)


def _delivery_columns() -> list[Column]:
    """What every delivery owed keeps (store/deliveries.py): its state, each attempt's outcome, its lease."""
    return [
        Column("status", String(12), nullable=False),  # pending | delivered | failed
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_status_code", Integer),
        Column("last_error", Text),
        Column("next_attempt_at", DateTime, nullable=False),
        Column("lease_owner", String(64)),
        Column("lease_until", DateTime),
        Column("created_at", DateTime, nullable=False),
        Column("delivered_at", DateTime),
    ]


# A webhook call or an e-mail owed for an event: retried with backoff, leased while one worker sends it.
alert_delivery = Table(
    "alert_delivery",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("event_pk", ForeignKey("alert_event.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("channel", String(8), nullable=False, server_default="webhook"),  # webhook | email
    *_delivery_columns(),
    Index("ix_alert_delivery_due", "status", "next_attempt_at"),
)


# -- the weekly digest (worker/digest.py) ------------------------------------------------------------------

# One row per project and week sent: the unique key decides which worker sends it (the first insert
# wins), as alert_event's does for a rule's window. ``content`` is what was sent, kept for the page.
digest_week = Table(
    "digest_week",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("week_start", DateTime, nullable=False),
    Column("content", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("project_pk", "week_start", name="uq_digest_week_project_week"),
)

# A digest owed to one member's address or to the project's digest webhook; retried and leased like
# alert deliveries.
digest_delivery = Table(
    "digest_delivery",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("digest_pk", ForeignKey("digest_week.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("channel", String(8), nullable=False),  # webhook | email
    Column("recipient", String(2000), nullable=False),  # the address, or the webhook URL
    *_delivery_columns(),
    Index("ix_digest_delivery_due", "status", "next_attempt_at"),
)


# Evaluations (store/evaluations.py). A test set is immutable once uploaded: each upload of a name is a
# new version with its own copy of the cases, so a run reads exactly what it was started on.
test_set = Table(
    "test_set",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("evaluators", JSON, nullable=False),  # [{evaluator, options}] applied to every case
    Column("case_count", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("project_pk", "name", "version", name="uq_test_set_version"),
)

test_case = Table(
    "test_case",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("test_set_pk", ForeignKey("test_set.pk", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("name", String(256), nullable=False),
    # {messages, model, model_config, metadata, pregenerated_response, evaluators}
    Column("body", JSON, nullable=False),
    # The embedding of its last user message (float16), filled by the workers: which topics it covers.
    Column("vector", LargeBinary),
    UniqueConstraint("test_set_pk", "name", name="uq_test_case_name"),
    # The workers' look-up of cases to embed: only those rows are in it.
    Index(
        "ix_test_case_unembedded", "pk", sqlite_where=text("vector IS NULL"), postgresql_where=text("vector IS NULL")
    ),
)

eval_run = Table(
    "eval_run",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("public_id", String(32), nullable=False, unique=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False),
    Column("test_set_pk", ForeignKey("test_set.pk", ondelete="CASCADE"), nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("status", String(12), nullable=False),  # pending | running | completed | errored
    Column("total", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Index("ix_eval_run_project", "project_pk", "created_at"),
)

# One case x iteration of a run: the unit of work a worker leases, and where its verdicts are kept.
eval_item = Table(
    "eval_item",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("run_pk", ForeignKey("eval_run.pk", ondelete="CASCADE"), nullable=False),
    Column("test_case_pk", ForeignKey("test_case.pk", ondelete="CASCADE"), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("done", Boolean, nullable=False, server_default=false()),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime),
    Column("response", Text),
    Column("result", JSON),  # {evaluations: [...], error, latency_ms, cost}
    Column("passed", Boolean),  # every evaluation positive and no error (pass rates count it)
    Column("finished_at", DateTime),
    UniqueConstraint("run_pk", "test_case_pk", "iteration", name="uq_eval_item"),
    Index("ix_eval_item_open", "done", "run_pk"),
)

# A rule that collects test cases from production: thumbs-down replies (of a topic, or all), sampled.
eval_collect_rule = Table(
    "eval_collect_rule",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("test_set_name", String(128), nullable=False),
    Column("topic_pk", ForeignKey("topic.pk", ondelete="CASCADE")),
    Column("sample_rate", Float, nullable=False),
    Column("keep", String(8), nullable=False),  # golden | avoid
    Column("cursor", BigInteger, nullable=False, server_default="0"),  # the last message examined
    Column("collected", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False),
)

# Online evaluation: an offline evaluator applied to a sample of production replies (of a topic, or all).
online_eval_rule = Table(
    "online_eval_rule",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("evaluator", JSON, nullable=False),  # {evaluator, options}
    Column("topic_pk", ForeignKey("topic.pk", ondelete="CASCADE")),
    Column("sample_rate", Float, nullable=False),
    Column("cursor", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False),
)

online_eval_result = Table(
    "online_eval_result",
    metadata,
    Column("pk", Pk, primary_key=True, autoincrement=True),
    Column("rule_pk", ForeignKey("online_eval_rule.pk", ondelete="CASCADE"), nullable=False),
    Column("message_pk", ForeignKey("message.pk", ondelete="CASCADE"), nullable=False),
    Column("conversation_pk", ForeignKey("conversation.pk", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),  # the reply's
    Column("model", String(128)),
    Column("outcome", String(20), nullable=False),
    UniqueConstraint("rule_pk", "message_pk", name="uq_online_eval_result"),
    Index("ix_online_eval_result_rule_time", "rule_pk", "created_at"),
)

# Online evaluation's rollup: added to in the transaction that stores a sweep's outcomes (so each reply
# counts once), per rule, day, topic and model. topic_pk 0 holds every reply (the totals by day or model);
# a reply also counts once under each topic of its conversation. evaluated excludes inconclusive verdicts.
online_eval_rollup = Table(
    "online_eval_rollup",
    metadata,
    Column("rule_pk", ForeignKey("online_eval_rule.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("topic_pk", BigInteger, primary_key=True, autoincrement=False),
    Column("model", String(128), primary_key=True),
    Column("evaluated", Integer, nullable=False, server_default="0"),
    Column("passed", Integer, nullable=False, server_default="0"),
    Column("inconclusive", Integer, nullable=False, server_default="0"),
    Column("over_budget", Integer, nullable=False, server_default="0"),  # sampled, not judged: allowance spent
)

# Replies a project's online LLM evaluators judged per UTC day (store/daily_allowance.py).
online_eval_usage = Table(
    "online_eval_usage",
    metadata,
    Column("project_pk", ForeignKey("project.pk", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("replies", Integer, nullable=False),
)
