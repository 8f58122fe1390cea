"""The real ``context-python`` client (import ``getcontext``) against a running ``convolens serve`` over TLS.

The SDK refuses to send a bearer token over plain http, so the test makes a CA and a certificate with
trustme, serves HTTPS with them, and builds the client with ``connection_verify=False``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from getcontext import ContextAPI
from getcontext.generated.models import (
    Conversation,
    Message,
    Thread,
    ThreadMessage,
)
from getcontext.generated.models import (
    Paths1S2Rf6XApiV1LogConversationThreadPostRequestbodyContentApplicationJsonSchema as ThreadBody,
)
from getcontext.generated.models import (
    PathsLi5TynApiV1LogConversationPostRequestbodyContentApplicationJsonSchema as LogBody,
)
from getcontext.generated.models import (
    PathsRai0VpApiV1LogConversationUpsertPostRequestbodyContentApplicationJsonSchema as UpsertBody,
)
from getcontext.token import Credential

from conftest import CLI, free_port, make_project
from convolens.store.db import Database


@pytest.fixture(scope="module")
def tls_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("sdk-home")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = home / "cert.pem", home / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    env = {**os.environ, "CONVOLENS_HOME": str(home), "CONVOLENS_DATABASE_URL": database_url}
    token = subprocess.run(
        [*CLI, "tokens", "create", "--project", f"sdk-{home.name}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    log = (home / "serve.log").open("w")
    process = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--port",
            str(port),
            "--ssl-certfile",
            str(certfile),
            "--ssl-keyfile",
            str(keyfile),
            "--log-level",
            "warning",
            "--graceful-timeout",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}"
    _wait_ready(base, process, home / "serve.log")
    yield base, token
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def _wait_ready(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"convolens serve exited: {log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", verify=False, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"convolens serve did not become ready: {log.read_text()}")


@pytest.fixture
def context(tls_server: tuple[str, str]) -> Iterator[ContextAPI]:
    base, token = tls_server
    with ContextAPI(credential=Credential(token), endpoint=base, connection_verify=False) as client:
        yield client


def _texts(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.message) for m in conversation.messages]


def test_the_context_sdk_round_trip(context: ContextAPI) -> None:
    # log.conversation: one whole conversation, as LangChain's handler sends it.
    logged = [
        Message(role="system", message="You translate English to French."),
        Message(role="user", message="I love programming with LangChain."),
        Message(role="assistant", message="J'adore programmer avec LangChain."),
    ]
    context.log.conversation(
        body=LogBody(
            conversation=Conversation(messages=logged, metadata={"model": "gpt-4o-mini", "user_id": "sdk-user"})
        )
    )

    # log.conversation_upsert twice: the second continues the first.
    history = [Message(role="user", message="What is 2+2?"), Message(role="assistant", message="4")]
    meta = {"user_id": "sdk-upsert"}
    context.log.conversation_upsert(body=UpsertBody(conversation=Conversation(messages=history, metadata=meta)))
    history += [Message(role="user", message="And 3+3?"), Message(role="assistant", message="6")]
    context.log.conversation_upsert(body=UpsertBody(conversation=Conversation(messages=history, metadata=meta)))

    # log.conversation_thread, then update_conversation_thread with the SDK's positional ratings.
    created = context.log.conversation_thread(
        body=ThreadBody(
            conversation=Thread(
                messages=[Message(role="user", message="Is it raining?"), Message(role="assistant", message="No.")]
            )
        )
    )
    thread_id = created.data.id
    assert thread_id
    context.log.update_conversation_thread(thread_id, body=[ThreadMessage(rating=None), ThreadMessage(rating=1)])

    listing = context.conversations(per_page=10)
    assert listing.pagination.total_records == 3 and listing.pagination.current_page == 1
    by_first = {c.messages[0].message: c for c in listing.conversations}
    assert _texts(by_first["You translate English to French."]) == [(m.role, m.message) for m in logged]
    assert by_first["You translate English to French."].metadata == {"model": "gpt-4o-mini", "user_id": "sdk-user"}
    assert _texts(by_first["What is 2+2?"]) == [(m.role, m.message) for m in history]

    thread = context.conversation(thread_id)
    assert thread.id == thread_id
    assert [(m.message, m.rating) for m in thread.messages] == [("Is it raining?", None), ("No.", 1)]

    assert context.conversation_series().available == ["sentiment", "rating", "volume", "outcome"]
    volume = context.volume(period="day")
    counts = {s.name: s.data for s in volume.series}
    assert sum(counts["conversations"].values()) == 3
    assert sum(counts["messages"].values()) == 3 + 4 + 2
    assert volume.period == "day" and volume.type == "volume"
    rating = context.rating(period="week")
    assert sum({s.name: s.data for s in rating.series}["positive"].values()) == 1


def test_the_sdk_sees_auth_errors(tls_server: tuple[str, str]) -> None:
    from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

    base, token = tls_server
    with (
        ContextAPI(credential=Credential("cl_not-a-real-token"), endpoint=base, connection_verify=False) as bad,
        pytest.raises(ClientAuthenticationError),
    ):
        bad.conversations()
    with (
        ContextAPI(credential=Credential(token), endpoint=base, connection_verify=False) as good,
        pytest.raises(ResourceNotFoundError),
    ):
        good.conversation("does-not-exist")


def test_a_custom_event_without_a_message_is_stored_as_an_event(tls_server: tuple[str, str], db: Database) -> None:
    # The SDK declares role and message optional; Context's docs log custom events with a name alone.
    base, _ = tls_server
    project = make_project(db, "sdk-events")  # its own project: the round trip above counts its conversations
    with ContextAPI(credential=Credential(project.token), endpoint=base, connection_verify=False) as client:
        created = client.log.conversation_thread(
            body=ThreadBody(
                conversation=Thread(
                    messages=[
                        Message(role="user", message="Add the pro plan"),
                        Message(type="event", name="user_clicked", role="user"),
                        Message(type="event", name="Checkout", metadata={"plan": "pro"}),
                    ]
                )
            )
        )
        stored = client.conversation(created.data.id)
    assert [(m.type, m.role, m.message) for m in stored.messages] == [
        ("message", "user", "Add the pro plan"),
        ("event", "user", "user_clicked"),
        ("event", "system", "Checkout"),
    ]
    assert stored.messages[2].metadata == {"plan": "pro"}
