"""The shapes of Context's evaluation calls (``context-python``'s TestSet, TestCase, Evaluator and
VersionRunParams), with bounds on every size. Evaluator options are checked by the evaluators
themselves after this (server/api/evaluations.py), so a wrong option is a 422 naming it too."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from convolens.schemas.topics import _no_nul, _one_line

MAX_TEST_CASES = 1000  # per upload (store/evaluations.py bounds a version after merging, to the same)
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 20_000
MAX_RESPONSE_CHARS = 50_000
MAX_EVALUATORS = 20
MAX_ITERATIONS = 20
MAX_JSON_BYTES, MAX_JSON_DEPTH = 20_000, 8  # options, model_config, metadata: each

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), AfterValidator(_one_line)]
CaseName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256), AfterValidator(_one_line)
]
EvaluatorName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_one_line)]
Text = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS), AfterValidator(_no_nul)]
Response = Annotated[str, StringConstraints(max_length=MAX_RESPONSE_CHARS), AfterValidator(_no_nul)]
Model = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_one_line)]


class EvaluatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evaluator: EvaluatorName
    options: dict[str, Any] | None = None


class CaseMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    message: Text


class TestCaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: CaseName
    model: Model | None = None
    model_config_: dict[str, Any] | None = Field(default=None, alias="model_config")
    metadata: dict[str, Any] | None = None
    messages: list[CaseMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    pregenerated_response: Response | None = None
    evaluators: list[EvaluatorSpec] | None = Field(default=None, max_length=MAX_EVALUATORS)


class TestSetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    test_cases: list[TestCaseBody] = Field(max_length=MAX_TEST_CASES)
    evaluators: list[EvaluatorSpec] | None = Field(default=None, max_length=MAX_EVALUATORS)


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_set_name: Name
    version: int = Field(ge=1, le=1_000_000)
    iterations: int = Field(default=1, ge=1, le=MAX_ITERATIONS)
