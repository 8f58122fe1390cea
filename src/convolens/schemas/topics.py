"""The shape of a topic definition sent to ``/api/v1/topics`` (and the dashboard's topic forms)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from convolens.schemas.bounds import has_control_chars, has_lone_surrogate


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and both backends must store exactly what they accepted.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if has_lone_surrogate(value):
        raise ValueError("must not contain unpaired UTF-16 surrogates")
    return value


def _one_line(value: str) -> str:
    if has_control_chars(value):
        raise ValueError("must not contain control characters")
    return _no_nul(value)


Phrase = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_one_line)
]
Example = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_no_nul)
]


class TopicDefinition(BaseModel):
    """keyword: ``keywords``; semantic: ``description`` and/or ``examples``; llm: ``prompt``."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), AfterValidator(_one_line)
    ]
    kind: Literal["keyword", "semantic", "llm"]
    keywords: list[Phrase] = Field(default_factory=list, max_length=200)
    description: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000), AfterValidator(_no_nul)] | None
    ) = None
    examples: list[Example] = Field(default_factory=list, max_length=100)
    prompt: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000), AfterValidator(_no_nul)] | None
    ) = None
    # Cosine similarity a message needs to match a semantic topic; the calibrated default when absent.
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # The category to put it in (an id from GET /api/v1/topic_categories); absent: uncategorised.
    category_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None

    @model_validator(mode="after")
    def _has_what_its_kind_needs(self) -> TopicDefinition:
        if self.kind == "keyword" and not self.keywords:
            raise ValueError("a keyword topic needs at least one entry in keywords")
        if self.kind == "semantic" and not (self.description or self.examples):
            raise ValueError("a semantic topic needs a description or examples")
        if self.kind == "llm" and not self.prompt:
            raise ValueError("an llm topic needs a prompt")
        return self

    def stored(self) -> dict[str, Any]:
        """The definition as kept in the topic row (only what its kind uses)."""
        if self.kind == "keyword":
            return {"keywords": self.keywords}
        if self.kind == "semantic":
            return {"description": self.description, "examples": self.examples, "threshold": self.threshold}
        return {"prompt": self.prompt, "description": self.description}
