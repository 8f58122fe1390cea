"""A rule in words, for people: the dashboard's pages and the e-mails say what a rule watches the same
way ("Negative share of user messages · topic 12 · language ko — above 20% in a day")."""

from __future__ import annotations

METRIC_LABELS = {
    "conversations": "Conversations",
    "messages": "Messages",
    "active_users": "Active users",
    "avg_sentiment": "Average user sentiment (-1 to +1)",
    "negative_share": "Negative share of user messages",
    "thumbs_down_share": "Thumbs-down share of ratings",
    "resolved_share": "Resolved share of conversations",
    "unresolved_share": "Unresolved share of conversations",
    "cost": "Estimated cost (USD)",
    "cost_per_user": "Estimated cost per active user (USD)",
    "backlog": "Messages waiting for enrichment",
    "new_suggested_topics": "New suggested topics",
    "emerging_topics": "Newly emerging topics (each once)",
    "eval_pass_rate": "Pass rate of a test set's latest run",
    "online_pass_rate": "Online evaluation pass rate",
}
# Shares are stored and compared as fractions (0.2); people read and type them as percentages (20%).
SHARES = frozenset(
    {"negative_share", "thumbs_down_share", "resolved_share", "unresolved_share", "eval_pass_rate", "online_pass_rate"}
)
FILTER_LABELS = {
    "topic_id": "topic", "language": "language", "model": "model", "tenant_id": "tenant", "test_set": "test set",
    "online_eval_id": "online evaluation",
}  # fmt: skip


def value_text(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    if metric in SHARES:
        return f"{100 * value:.1f}%"
    if metric in ("cost", "cost_per_user"):
        return f"${value:,.4g}"
    if metric == "avg_sentiment":
        return f"{value:+.2f}"
    return f"{value:,.0f}"


def condition_text(definition: dict) -> str:
    c, metric, window = definition["condition"], definition["metric"], definition["window"]
    kind, op, threshold = c["kind"], c["op"], float(c["threshold"])
    if kind == "threshold":
        said = f"{op} {value_text(metric, threshold)} in {'an hour' if window == 'hour' else 'a day'}"
    elif kind == "change":
        before = "the same " + ("hour" if window == "hour" else "weekday") + " a week before"
        if c.get("against", "previous") == "previous":
            before = f"the {window} before"
        said = f"change {op} {threshold:+g}% against {before}"
    else:
        said = f"z-score {op} {threshold:g} against the {c.get('periods', 14)} {window}s before"
    if int(c.get("min_volume") or 0):
        said += f" (at least {int(c['min_volume']):,} in the {window})"
    return said


def filter_text(definition: dict, topic_names: dict[int, str] | None = None) -> str:
    parts = []
    found = dict(definition.get("filter") or {})
    key = found.pop("metadata_key", None)
    value = found.pop("metadata_value", None)
    if key is not None:
        parts.append(f"metadata {key}={value}")
    for key, value in found.items():
        if value is None:
            continue
        if key == "topic_id" and topic_names is not None:
            value = topic_names.get(int(value), f"#{value}")
        parts.append(f"{FILTER_LABELS.get(key, key)} {value}")
    return " · ".join(parts)


def describe(definition: dict, topic_names: dict[int, str] | None = None) -> str:
    what = METRIC_LABELS.get(definition["metric"], definition["metric"])
    where = filter_text(definition, topic_names)
    return f"{what}{' · ' + where if where else ''} — {condition_text(definition)}"
