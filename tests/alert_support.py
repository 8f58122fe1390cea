"""What the alert tests share: a webhook receiver (a real HTTP server in the test), a server without an
embedded worker (the tests step the workers' alert duties themselves, at chosen times), and data made
for a rule: messages on chosen days, with chosen languages, labels and topics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import insert, select, update

from conftest import TEST_LIMITS, RunningServer, free_port
from convolens.config import LlmSettings, Settings
from convolens.outbound import OutboundPolicy
from convolens.server.app import create_app
from convolens.store.db import Database
from convolens.store.tables import message, message_topic

LOOPBACK = OutboundPolicy.parse("127.0.0.0/8")


@dataclass
class Receiver:
    """Records every request; answers each with the next status of ``statuses`` (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


@contextmanager
def webhook_receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{http.server_address[1]}/hook"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        http.shutdown()
        http.server_close()


@contextmanager
def quiet_server(db: Database, home: Path) -> Iterator[RunningServer]:
    """The real app under uvicorn, without its embedded worker, allowing webhooks on the loopback."""
    settings = Settings(
        database_url=db.url, home=home, limits=TEST_LIMITS, llm=LlmSettings(), outbound=LOOPBACK,
        embedded_worker=False,
    )  # fmt: skip
    app = create_app(settings)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app.state.db, settings, app)
    finally:
        uv.should_exit = True
        thread.join(10)


def send_day(client: httpx.Client, day: datetime, texts: list[str], tag: str) -> None:
    """One conversation of user messages on ``day`` (from 10:00, a minute apart)."""
    cid = f"{tag}-{day:%Y%m%d}"
    events: list[dict] = [{"type": "conversation", "id": cid, "user_id": f"user-{tag}"}]
    events += [
        {"type": "message", "conversation_id": cid, "id": f"{cid}-{i}", "role": "user", "content": text,
         "timestamp": (day + timedelta(hours=10, minutes=i)).isoformat() + "Z"}
        for i, text in enumerate(texts)
    ]  # fmt: skip
    response = client.post("/api/v1/ingest", json={"events": events})
    assert response.status_code == 202, response.text


def label(db: Database, project_pk: int, prefix: str, *, language: str, sentiment: str, topic_pk: int | None) -> int:
    """Give the messages whose id starts with ``prefix`` a language, a sentiment label and a topic."""
    with db.writer() as conn:
        rows = conn.execute(
            select(message.c.pk, message.c.conversation_pk, message.c.created_at).where(
                message.c.project_pk == project_pk, message.c.id.startswith(prefix)
            )
        ).all()
        conn.execute(
            update(message)
            .where(message.c.pk.in_([r.pk for r in rows]))
            .values(language=language, sentiment_label=sentiment, sentiment=-0.8 if sentiment == "negative" else 0.3)
        )
        if topic_pk is not None and rows:
            conn.execute(
                insert(message_topic),
                [
                    {"message_pk": r.pk, "topic_pk": topic_pk, "project_pk": project_pk,
                     "conversation_pk": r.conversation_pk, "created_at": r.created_at, "score": 1.0}
                    for r in rows
                ],
            )  # fmt: skip
    return len(rows)
