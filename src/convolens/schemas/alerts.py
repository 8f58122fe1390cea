"""The shape of an alert rule sent to ``/api/v1/alerts``."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from convolens.schemas.timestamps import Timestamp
from convolens.schemas.topics import _one_line

# A rule's name and a filter's value: one line of at most 128 characters.
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), AfterValidator(_one_line)]
Name = Line
Value = Line
MAX_RECIPIENTS = 10
# An address the SMTP server is handed as is: a plain local part and a dotted host name, nothing a header
# could be split or folded with (no quotes, brackets, commas, spaces or line breaks). Linear: each label
# is bounded and the dots separate them.
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def _address(value: str) -> str:
    if len(value) > 254 or not EMAIL.fullmatch(value):
        raise PydanticCustomError("email", "not an e-mail address (name@example.com)")
    return value.lower()


Address = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254), AfterValidator(_address)
]

# Figures of the rollups (store/rollups.py) except ``negative_share``, which the rollups do not keep
# (they hold the sentiment sum and count, not the labels): it is counted from the messages of the
# window, which is also why it alone may be filtered by two dimensions at once. ``cost`` is the window's
# estimated USD from the rollups' token counts and the price table (enrich/prices.py). ``backlog`` is the
# project's messages from before the window's end still waiting for enrichment when it is decided;
# ``new_suggested_topics`` the suggested topics the clustering found in the window (above 0: "tell us when
# a new topic appears"); ``emerging_topics`` the topics that became emerging (store/topic_figures.py: at
# least 10 messages in the 7 days to the window's end, and none or at most half as many in the 7 before)
# and that the rule has not told of before: each topic once per rule. ``eval_pass_rate`` is the pass rate
# of the latest run of the test set ``filter.test_set`` that finished in the window; ``online_pass_rate``
# the share of positive verdicts among the replies the online evaluation ``filter.online_eval_id`` judged
# in the window (both read from the evaluations' own tables, not the rollups).
Metric = Literal[
    "conversations",
    "messages",
    "active_users",
    "avg_sentiment",
    "negative_share",
    "thumbs_down_share",
    "resolved_share",
    "unresolved_share",
    "cost",
    "cost_per_user",
    "backlog",
    "new_suggested_topics",
    "emerging_topics",
    "eval_pass_rate",
    "online_pass_rate",
]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
UNFILTERED = ("backlog", "new_suggested_topics", "emerging_topics")
# Events rather than states: each window that holds is its own news (a topic appearing has nothing to
# clear), so these fire whenever their window holds and never send "resolved".
EVENT_METRICS = frozenset({"new_suggested_topics", "emerging_topics"})
# Metrics read from the evaluations' tables, each by the one filter naming what it watches.
EVALUATION_FILTER = {"eval_pass_rate": "test_set", "online_pass_rate": "online_eval_id"}
# A metadata key: a JSON path segment on SQLite, so no quotes, backslashes or control characters
# (as /api/v1/metrics' ``group_by=metadata.<key>``).
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r'^[^"\\\x00-\x1f\x7f]+$')]


class AlertFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None
    language: Value | None = None
    model: Value | None = None
    # Every rollup row is kept per tenant scope too, so a tenant combines with any one dimension.
    tenant_id: Value | None = None
    # The conversations whose metadata has ``metadata_key`` equal to ``metadata_value`` (as text): read
    # from the base tables over the window, since the rollups keep no metadata.
    metadata_key: MetadataKey | None = None
    metadata_value: Value | None = None
    test_set: Value | None = None  # eval_pass_rate: the test set's name
    online_eval_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None  # online_pass_rate

    def dimensions(self) -> dict[str, str]:
        """{dimension: value} of the filters set (the tenant is a scope, not a dimension); the metadata
        pair is the summary's ``metadata.<key>`` dimension."""
        found = {"topic": self.topic_id, "language": self.language, "model": self.model}
        if self.metadata_key is not None:
            found[f"metadata.{self.metadata_key}"] = self.metadata_value
        return {k: v for k, v in found.items() if v is not None}


class AlertCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["threshold", "change", "anomaly"]
    op: Literal["above", "below"]
    # change: against the window just before, or the same window a week before (same weekday, same hour)
    against: Literal["previous", "week_before"] = "previous"
    # threshold: the value; change: a change in % (e.g. 50 or -30); anomaly: a z-score (e.g. 3 or -3)
    threshold: float = Field(allow_inf_nan=False, ge=-1e12, le=1e12)
    periods: int = Field(default=14, ge=3, le=60)  # anomaly: the windows before it compared with
    min_volume: int = Field(default=0, ge=0, le=10**9)


class AlertChannel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    format: Literal["json", "slack", "teams"] = "json"


class AlertEmail(BaseModel):
    """Who gets the alert by e-mail (over the operator's SMTP server, CONVOLENS_SMTP_*)."""

    model_config = ConfigDict(extra="forbid")

    to: list[Address] = Field(min_length=1, max_length=MAX_RECIPIENTS)


class AlertRuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    metric: Metric
    filter: AlertFilter = Field(default_factory=AlertFilter)
    condition: AlertCondition
    window: Literal["hour", "day"] = "day"
    cooldown_minutes: int = Field(default=24 * 60, ge=0, le=60 * 24 * 90)
    channel: AlertChannel | None = None
    email: AlertEmail | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _one_dimension_from_rollups(self) -> AlertRuleBody:
        f = self.filter
        if (f.metadata_key is None) != (f.metadata_value is None):
            raise ValueError("filter: metadata_key and metadata_value go together (key=value)")
        needed = EVALUATION_FILTER.get(self.metric)
        for metric, name in EVALUATION_FILTER.items():
            if getattr(f, name) is not None and metric != self.metric:
                raise ValueError(f"filter: {name} is only for {metric}")
        if needed is not None:
            if getattr(f, needed) is None:
                raise ValueError(f"filter: {self.metric} needs filter.{needed}")
            if f.dimensions() or f.tenant_id:
                raise ValueError(f"filter: {self.metric} takes no other filter (it is the evaluation's)")
            return self
        if self.metric in UNFILTERED and (self.filter.dimensions() or self.filter.tenant_id):
            # Language and topics are what enrichment finds: a waiting message has neither yet; a
            # suggested topic is the project's.
            raise ValueError(f"filter: {self.metric} takes no filter (it counts the whole project's)")
        if self.metric != "negative_share" and len(self.filter.dimensions()) > 1:
            # A rollup row is split by one dimension; a pair would need a rollup per pair.
            raise ValueError("filter: only negative_share can be filtered by two dimensions at once")
        return self

    def definition(self) -> dict:
        """What is stored (the name and the enabled flag are columns of their own)."""
        return self.model_dump(exclude={"name", "enabled"})


MAX_MUTE_DAYS = 366


class AlertMute(BaseModel):
    """``until``: when the mute ends (UTC, within a year); null unmutes."""

    model_config = ConfigDict(extra="forbid")

    until: Timestamp | None = None
