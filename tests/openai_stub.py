"""A local stand-in for an OpenAI-compatible chat API (the one edge the tests cannot reach).

It answers ``POST /v1/chat/completions`` like the real API, deciding a topic verdict by a rule the
test gives it, and records every request so a test can check what convolens sent. A translation request
(a JSON object with ``target_language`` and ``texts``) is answered by ``translate``, by default with
``"[<target>] <text>"`` for each text, so a test can tell what was translated and into what.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Rule = Callable[[str, str], dict | str | None]  # (topic, message) → answer object, raw text, or None for a 500
# (target language, texts) → answer object, raw text, or None for a 500
TranslateRule = Callable[[str, list[str]], dict | str | None]


def tag_translations(target: str, texts: list[str]) -> dict:
    return {"translations": [f"[{target}] {text}" for text in texts]}


def translation_request(body: dict) -> dict | None:
    """The ``{target_language, texts}`` of a translation request, else None."""
    try:
        asked = json.loads(body["messages"][-1]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return asked if isinstance(asked, dict) and isinstance(asked.get("texts"), list) else None


# A batched naming request (enrich/llm.py name_clusters): its groups → the answer object, or None for a 500.
Namer = Callable[[list[dict]], dict | None]
NAMING_PROMPT = "Name these groups:\n"


def name_by_keywords(groups: list[dict]) -> dict:
    """A deterministic namer: each group named after its first keyword (or message)."""
    out = []
    for group in groups:
        word = (group["keywords"] or group["messages"] or ["nothing"])[0]
        out.append({"id": group["id"], "name": f"About {word}", "description": f"Users ask about {word}."})
    return {"clusters": out}


# A batched outcome judge request (enrich/outcome_judge.py): its conversations → the answer, or None for a 500.
Judge = Callable[[list[dict]], dict | str | None]
JUDGE_PROMPT = "Judge these conversations:\n"


def judge_by_last_words(conversations: list[dict]) -> dict:
    """A deterministic judge: a conversation whose last user message thanks is resolved, else unresolved."""
    out = []
    for c in conversations:
        said = [m["text"] for m in c["messages"] if m["role"] == "user"]
        thanked = bool(said) and "thank" in said[-1].lower()
        verdict = "resolved" if thanked else "unresolved"
        out.append({"id": c["id"], "verdict": verdict, "reason": f"The user's last words: {said[-1] if said else ''}"})
    return {"conversations": out}


@contextmanager
def openai_stub(
    rule: Rule,
    translate: TranslateRule = tag_translations,
    namer: Namer = name_by_keywords,
    judge: Judge = judge_by_last_words,
) -> Iterator[tuple[str, list[dict]]]:
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            prompt = body["messages"][-1]["content"]
            found = re.match(r"Topic: (.*)\n\nMessage: (.*)", prompt, re.S)
            topic, text = (found.group(1), found.group(2)) if found else ("", prompt)  # no topic: a naming request
            asked = translation_request(body)
            if self.path != "/v1/chat/completions":
                answer = None
            elif asked is not None:
                answer = translate(str(asked.get("target_language")), [str(t) for t in asked["texts"]])
            elif prompt.startswith(NAMING_PROMPT):
                answer = namer(json.loads(prompt[len(NAMING_PROMPT) :]))
            elif prompt.startswith(JUDGE_PROMPT):
                answer = judge(json.loads(prompt[len(JUDGE_PROMPT) :]))
            else:
                answer = rule(topic, text)
            if answer is None:
                self.send_response(500)
                self.end_headers()
                return
            content = answer if isinstance(answer, str) else json.dumps(answer)
            payload = json.dumps(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                    ],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
