"""A production conversation's turn as a test case: the messages before an assistant reply become the
case's input, and the reply either its golden response (``keep="golden"``: later answers must mean the
same, judged by ``semantic_match``) or an example of what not to say (``keep="avoid"``: they must not).
The case has no pre-generated response, so a run asks the app under test or the provider again."""

from __future__ import annotations

from typing import Any, Literal

from convolens.evaluations import registry
from convolens.schemas.evaluations import MAX_MESSAGE_CHARS, MAX_MESSAGES

ROLES = ("system", "user", "assistant")


class NotATurn(ValueError):
    """The chosen message is not an assistant reply with something before it."""


def case_from_turn(
    conversation_id: str,
    messages: list[Any],
    index: int,
    keep: Literal["golden", "avoid"],
) -> dict[str, Any]:
    """``messages``: the transcript's messages (``role``, ``kind``, ``content``, ``model``), ``index`` the
    reply's place among them. Events and tool messages are left out of the input; the input keeps the
    last ``MAX_MESSAGES`` messages, each cut to ``MAX_MESSAGE_CHARS`` characters."""
    if not 0 <= index < len(messages) or messages[index].role != "assistant" or messages[index].kind == "event":
        raise NotATurn("choose an assistant reply")
    before = [
        {"role": m.role, "message": m.content[:MAX_MESSAGE_CHARS]}
        for m in messages[:index]
        if m.kind != "event" and m.role in ROLES and m.content
    ][-MAX_MESSAGES:]
    if not any(m["role"] == "user" for m in before):
        raise NotATurn("the reply has no user message before it")
    reply = messages[index].content[:MAX_MESSAGE_CHARS]
    if not reply.strip():
        raise NotATurn("the reply is empty")
    options = registry.check(
        "semantic_match", {"golden_response": reply, "expect": "different" if keep == "avoid" else "similar"}
    )
    return {
        "name": f"{conversation_id[:200]} #{index + 1}",
        "messages": before,
        "model": messages[index].model,
        "model_config": None,
        "metadata": {"conversation_id": conversation_id[:200], "message": index + 1, "kept_as": keep},
        "pregenerated_response": None,
        "evaluators": [{"evaluator": "semantic_match", "options": options}],
    }
