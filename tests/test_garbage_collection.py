"""An API process collects garbage for large requests, not for its own start-up (server/garbage_collection.py).

Each check runs in a process of its own, as ``convolens serve --workers N`` starts one
(``app.api_process_app``): the collector's settings are process-wide, and this test process's must not
change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# In the child: build an API process's app (or not), then translate one 512-span OTLP/JSON export, as
# POST /v1/traces does before the write, and count the collections that ran meanwhile.
CHILD = """
import gc, json, sys
if sys.argv[1] == "api-process":
    from convolens.server.app import api_process_app
    api_process_app()
else:
    from convolens.server.app import create_app
    create_app(run_migrations=False)
from convolens.otlp import turns
from convolens.otlp.wire import JSON, decode_spans

def value(v):
    return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}

def messages(role, text):
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])

spans = [
    {
        "traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "chat", "kind": 3,
        "startTimeUnixNano": str(1_760_000_000 * 10**9 + i), "endTimeUnixNano": str(1_760_000_001 * 10**9 + i),
        "attributes": [{"key": k, "value": value(v)} for k, v in {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "user.id": f"user-{i % 40}",
            "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 90,
            "gen_ai.input.messages": messages("user", f"Where is my order number {i}? " * 8),
            "gen_ai.output.messages": messages("assistant", f"Order {i} left the warehouse today. " * 12),
        }.items()],
    }
    for i in range(512)
]
body = json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})
before = [s["collections"] for s in gc.get_stats()]
translation = turns.turns_from_spans(decode_spans(body.encode(), JSON), 50)
batch, placed = turns.to_batch(translation)
after = [s["collections"] for s in gc.get_stats()]
print(json.dumps({
    "events": len(batch.events), "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
    "collections": [a - b for a, b in zip(after, before)],
}))
"""


def _translate_in_a_process(tmp_path: Path, kind: str) -> dict:
    env = {
        **os.environ,
        "CONVOLENS_HOME": str(tmp_path / kind),
        "CONVOLENS_EMBEDDED_WORKER": "0",
        "CONVOLENS_SERVE_LOG_LEVEL": "warning",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_api_process_freezes_its_start_up_and_collects_a_large_request_a_few_times(tmp_path: Path) -> None:
    tuned = _translate_in_a_process(tmp_path, "api-process")
    default = _translate_in_a_process(tmp_path, "app-only")
    assert tuned["events"] == default["events"] >= 512 * 2  # the same work: a user and a reply a span at least
    assert tuned["threshold"] == [50_000, 20, 100]
    assert tuned["frozen"] > 50_000  # the app, its routes and schemas: out of every collection's walk
    assert default["frozen"] == 0
    young, middle, full = tuned["collections"]
    # With CPython's defaults (700, 10, 10) the same translation runs a young collection every 700 new
    # container objects (26 here), and each tenth of them a middle one.
    assert default["collections"][0] > 15, default
    assert young <= 2 and middle == 0 and full == 0, tuned
