"""What the alert tests share: a webhook receiver (a real HTTP server in the test), a server without an
embedded worker (the tests step the workers' alert duties themselves, at chosen times), and data made
for a rule: messages on chosen days, with chosen languages, labels and topics."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import insert, select, update

from conftest import RunningServer, free_port, running_server
from convolens.config import SmtpSettings
from convolens.outbound import OutboundPolicy
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


def quiet_server(db: Database, home: Path) -> AbstractContextManager[RunningServer]:
    """The real app under uvicorn, without its embedded worker, allowing webhooks on the loopback."""
    return running_server(db, home, outbound=LOOPBACK, embedded_worker=False)


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


@dataclass
class Mailbox:
    """What a real SMTP server (aiosmtpd) in the test received, and the settings that reach it."""

    smtp: SmtpSettings
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def mail_server(
    tls: str = "none", user: str | None = None, password: str | None = None, tmp: Path | None = None
) -> Iterator[Mailbox]:
    """aiosmtpd on a free loopback port: plain, STARTTLS or implicit TLS with a certificate of a test CA
    (trustme; the settings carry its bundle as CONVOLENS_SMTP_CA_FILE would), and AUTH when ``user`` is
    given (refusing any other password)."""
    import ssl

    import trustme
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    port = free_port()
    ca_file, server_context = None, None
    if tls != "none":
        assert tmp is not None, "a folder for the test CA's bundle"
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
        ca_file = str(tmp / "smtp-ca.pem")
        ca.cert_pem.write_to_path(ca_file)
    box = Mailbox(
        SmtpSettings(host="127.0.0.1", port=port, tls=tls, user=user, password=password, sender="alerts@convolens.test",
                     ca_file=ca_file, timeout=10)
    )  # fmt: skip

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            box.messages.append(BytesParser(policy=default).parsebytes(envelope.original_content or envelope.content))
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, secret = auth_data.login.decode(), auth_data.password.decode()
        box.logins.append((login, secret))
        return AuthResult(success=(login, secret) == (user, password), handled=False)  # False: aiosmtpd answers 535

    options: dict = {"hostname": "127.0.0.1", "port": port}
    if user:
        # aiosmtpd counts only STARTTLS as TLS for AUTH; an implicit-TLS connection is encrypted from the start.
        options |= {"authenticator": authenticate, "auth_required": True, "auth_require_tls": tls == "starttls"}
    if tls == "starttls":
        options |= {"tls_context": server_context, "require_starttls": True}
    elif tls == "implicit":
        options |= {"ssl_context": server_context}
    controller = Controller(Handler(), **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
