"""A run against a small local "app under test" HTTP server: the project sets its URL (through the
outbound guard), cases without a pre-generated response are sent to it, its answers are evaluated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from conftest import Project, RunningServer, make_project, running_server, separate_database
from convolens.outbound import OutboundPolicy

LOOPBACK = OutboundPolicy.parse("127.0.0.0/8")


@contextmanager
def app_under_test() -> Iterator[tuple[str, list[dict]]]:
    """The team's chain, as far as a test needs it: answers JSON, plain text, an error, or too much."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            asked = body["messages"][-1]["content"]
            if asked == "plain":
                payload, kind, status = b"plain answer", "text/plain; charset=utf-8", 200
            elif asked == "break":
                payload, kind, status = b"{}", "application/json", 503
            elif asked == "flood":
                payload, kind, status = b'{"response": "' + b"x" * (2 << 20) + b'"}', "application/json", 200
            else:
                payload = json.dumps({"response": f"app: {asked}", "cost": 0.004}).encode()
                kind, status = "application/json", 200
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _case(name: str, message: str, response: str | None = None) -> dict:
    found = {"name": name, "messages": [{"role": "user", "message": message}], "model": "my-chain"}
    return found | ({"pregenerated_response": response} if response else {})


def _wait_done(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = client.get(f"/api/v1/evaluations/run/{run_id}").json()
        if found["status"] in ("completed", "errored"):
            return found
        time.sleep(0.2)
    raise AssertionError(f"run not finished: {found}")


def test_a_run_asks_the_app_under_test(database_url: str, tmp_path: Path) -> None:
    with (
        separate_database(database_url, tmp_path, "eval_app") as db,
        running_server(db, tmp_path, outbound=LOOPBACK) as server,
        app_under_test() as (app_url, seen),
    ):
        project = make_project(db, "eval-app")
        with server.client(project.read_token) as reader:
            assert reader.put("/api/v1/evaluations/app", json={"url": app_url}).status_code == 403
            assert reader.get("/api/v1/evaluations/app").json() == {"url": None, "has_authorization": False}
        with server.client(project.admin_token) as admin:
            refused = admin.put("/api/v1/evaluations/app", json={"url": "ftp://example.com/chat"})
            assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "url"
            saved = admin.put("/api/v1/evaluations/app", json={"url": f"{app_url}/chat", "authorization": "Bearer s3"})
            assert saved.json() == {"url": f"{app_url}/chat", "has_authorization": True}
            cases = [
                _case("asked", "where is my order?"),
                _case("plain", "plain"),
                _case("given", "hello", response="pre-generated"),  # never sent to the app
                _case("broken", "break"),
                _case("flooded", "flood"),
            ]
            evaluators = [{"evaluator": "regex", "options": {"pattern": "^(app: |plain |pre-)"}},
                          {"evaluator": "cost", "options": {"max_cost": 0.01}}]  # fmt: skip
            assert admin.post("/api/v1/test_sets", json={"name": "app", "test_cases": cases,
                                                          "evaluators": evaluators}).status_code == 201  # fmt: skip
            run_id = admin.post("/api/v1/evaluations/run", json={"test_set_name": "app", "version": 1}).json()
            done = _wait_done(admin, run_id["data"]["run_id"])
    assert done["status"] == "errored"  # two cases got no response
    by_name = {r["test_case"]["name"]: r for r in done["results"]}
    assert {n: [m["message"] for m in r["test_case"]["output"]] for n, r in by_name.items()} == {
        "asked": ["app: where is my order?"],
        "plain": ["plain answer"],
        "given": ["pre-generated"],
        "broken": [],
        "flooded": [],
    }
    assert {n: [e["outcome"] for e in r["evaluations"]] for n, r in by_name.items()} == {
        "asked": ["positive", "positive"],  # the app's own cost, 0.004
        "plain": ["positive", "inconclusive"],  # plain text carries no cost
        "given": ["positive", "inconclusive"],
        "broken": ["inconclusive", "inconclusive"],
        "flooded": ["inconclusive", "inconclusive"],
    }
    assert by_name["broken"]["error"] == "the app under test answered HTTP 503"
    assert (
        by_name["flooded"]["error"] == "the app under test's answer has no response: the answer is over 1048576 bytes"
    )
    assert sorted(s["body"]["test_case"] for s in seen) == ["asked", "broken", "flooded", "plain"]
    asked = next(s for s in seen if s["body"]["test_case"] == "asked")
    assert asked["path"] == "/chat" and asked["auth"] == "Bearer s3"
    assert asked["body"]["messages"] == [{"role": "user", "content": "where is my order?"}]
    assert asked["body"]["model"] == "my-chain"


def test_the_app_url_must_pass_the_outbound_guard(server: RunningServer, project: Project) -> None:
    with server.client(project.admin_token) as admin:
        refused = admin.put("/api/v1/evaluations/app", json={"url": "http://127.0.0.1:9/chat"})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "url"
        assert refused.json()["errors"][0]["msg"].startswith("the address 127.0.0.1 is not public")
        metadata = admin.put("/api/v1/evaluations/app", json={"url": "http://169.254.169.254/latest"})
        assert metadata.status_code == 422 and metadata.json()["errors"][0]["field"] == "url"
        assert admin.delete("/api/v1/evaluations/app").status_code == 204
        assert admin.get("/api/v1/evaluations/app").json() == {"url": None, "has_authorization": False}
