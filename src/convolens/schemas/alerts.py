"""The shape of an alert rule sent to ``/api/v1/alerts``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from convolens.schemas.topics import _one_line

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), AfterValidator(_one_line)]
Value = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), AfterValidator(_one_line)
]

# Figures of the rollups (store/rollups.py) except ``negative_share``, which the rollups do not keep
# (they hold the sentiment sum and count, not the labels): it is counted from the messages of the
# window, which is also why it alone may be filtered by two dimensions at once.
METRICS = (
    "conversations",
    "messages",
    "active_users",
    "avg_sentiment",
    "negative_share",
    "thumbs_down_share",
    "resolved_share",
    "unresolved_share",
)
Metric = Literal[
    "conversations",
    "messages",
    "active_users",
    "avg_sentiment",
    "negative_share",
    "thumbs_down_share",
    "resolved_share",
    "unresolved_share",
]


class AlertFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None
    language: Value | None = None
    model: Value | None = None

    def dimensions(self) -> dict[str, str]:
        """{rollup dimension: value} of the filters set."""
        found = {"topic": self.topic_id, "language": self.language, "model": self.model}
        return {k: v for k, v in found.items() if v is not None}


class AlertCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["threshold", "change", "anomaly"]
    op: Literal["above", "below"]
    # threshold: the value; change: a change in % (e.g. 50 or -30); anomaly: a z-score (e.g. 3 or -3)
    threshold: float = Field(allow_inf_nan=False, ge=-1e12, le=1e12)
    periods: int = Field(default=14, ge=3, le=60)  # anomaly: the windows before it compared with
    min_volume: int = Field(default=0, ge=0, le=10**9)


class AlertChannel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    format: Literal["json", "slack"] = "json"


class AlertRuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    metric: Metric
    filter: AlertFilter = Field(default_factory=AlertFilter)
    condition: AlertCondition
    window: Literal["hour", "day"] = "day"
    cooldown_minutes: int = Field(default=24 * 60, ge=0, le=60 * 24 * 90)
    channel: AlertChannel | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _one_dimension_from_rollups(self) -> AlertRuleBody:
        if self.metric != "negative_share" and len(self.filter.dimensions()) > 1:
            # A rollup row is split by one dimension; a pair would need a rollup per pair.
            raise ValueError("filter: only negative_share can be filtered by two dimensions at once")
        return self

    def definition(self) -> dict:
        """What is stored (the name and the enabled flag are columns of their own)."""
        return self.model_dump(exclude={"name", "enabled"})
