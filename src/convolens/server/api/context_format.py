"""Store views → Context's response shapes (``ConversationResponse``, ``MessageResponse``).

Fields that enrichment fills (sentiment, language, topics) are null or empty until it has run.
convolens adds a few fields Context did not have (ids, tenant, user, counts); the SDK ignores them.
"""

from __future__ import annotations

from typing import Any

from convolens.store.conversation_reads import ConversationView, MessageView
from convolens.store.outcome_fields import from_mask
from convolens.timeutil import iso


def message_response(m: MessageView) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "type": m.kind,
        "event_timestamp": iso(m.created_at),
        "role": m.role,
        "message": m.content,
        "rating": m.rating,
        "language": m.language,
        "translation": m.translation,
        "sentiment": m.sentiment,
        "sentiment_label": m.sentiment_label,
        "topics": m.topics,
        "suggested_topics": m.suggested_topics,
        "metadata": m.metadata or {},
        "name": m.name,
    }
    if m.extra:
        out.update({k: v for k, v in m.extra.items() if k in ("thought", "input", "observation")})
    for key in ("model", "input_tokens", "output_tokens", "latency_ms", "error"):
        value = getattr(m, key)
        if value is not None:
            out[key] = value
    return out


def conversation_response(c: ConversationView) -> dict[str, Any]:
    return {
        "id": c.id,
        "metadata": c.metadata or {},
        "sentiment_trend": c.sentiment_trend,
        # Were users helped (null until enrichment has run): resolved/unresolved/abandoned/unknown, and why.
        "outcome": c.outcome,
        "outcome_signals": from_mask(c.outcome_signals),
        # "llm" where the project's LLM judge gave the outcome, with its one-sentence reason; else "rules".
        "outcome_by": "llm" if c.outcome_by == "llm" else ("rules" if c.outcome else None),
        "outcome_reason": c.outcome_reason if c.outcome_by == "llm" else None,
        "topics": c.topics,
        "suggested_topics": c.suggested_topics,
        "languages": c.languages,
        "messages": [message_response(m) for m in c.messages],
        "tenant_id": c.tenant_id,
        "user_id": c.user_id,
        "feedback": c.feedback,
        "started_at": iso(c.started_at),
        "last_message_at": iso(c.last_message_at),
        "message_count": c.message_count,
    }
