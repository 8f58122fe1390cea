"""The outbound guard (server-side request forgery): a URL a project admin sets reaches only public
addresses, however the host is written, whatever its name resolves to when the request is made, unless
the operator allowed the host; and no credentials in those URLs or in the logs.

Requests go over real HTTP to the OpenAI-compatible stub on 127.0.0.1; DNS is played by the policy's
resolver hook (no network here), never by a mock of httpx."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpx
import pytest

from convolens.config import LlmSettings
from convolens.enrich.llm import Judges, LlmJudge, Verdict
from convolens.outbound import (
    ALLOW_ENV,
    GuardedTransport,
    OutboundPolicy,
    RefusedUrl,
    safe_url,
    system_resolver,
    validate_url,
)
from openai_stub import openai_stub

PUBLIC = "93.184.216.34"  # a global address; nothing here connects to it


def _yes(topic: str, text: str) -> dict:
    return {"verdict": True, "reason": "stub"}


def _port(url: str) -> int:
    return httpx.URL(url).port or 80


def dns(answers: dict[str, list[list[str]]]) -> Callable[[str, int], list[str]]:
    """A resolver whose names answer in turn (the last answer repeats); other names as the system does."""
    asked: dict[str, int] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            return system_resolver(host, port)
        turn = asked[host] = asked.get(host, -1) + 1
        return answers[host][min(turn, len(answers[host]) - 1)]

    return resolve


# Each form a project admin could write to reach this machine, its network, or a cloud's metadata service.
BLOCKED = [
    "http://127.0.0.1:5432/v1",
    "http://169.254.169.254/latest/meta-data",
    "http://0x7f000001/v1",
    "http://2130706433/v1",
    "http://0177.0.0.1/v1",
    "http://127.1/v1",
    "http://0/v1",
    "http://10.1.2.3/v1",
    "http://192.168.0.1/v1",
    "http://100.64.0.1/v1",
    "http://224.0.0.1/v1",
    "http://[::1]/v1",
    "http://[fd00:ec2::254]/v1",
    "http://[fe80::1]/v1",
    "http://[::ffff:127.0.0.1]/v1",
    "http://[::ffff:a9fe:a9fe]/v1",
    "http://[64:ff9b::7f00:1]/v1",
    "http://[2002:7f00:1::]/v1",
    "http://localhost:5432/v1",
    "http://LOCALHOST./v1",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_every_form_of_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(RefusedUrl, match="not public"):
        safe_url(url, OutboundPolicy())


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:sk-secret@llm.example/v1", "user name or password"),
        ("http://@llm.example/v1", "user name or password"),
        ("http://llm.example/v1?x=/", "query"),
        ("http://llm.example/v1?", "query"),
        ("http://llm.example/v1#frag", "fragment"),
        ("ftp://llm.example/v1", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://[fe80::1%25eth0]/v1", "zone id"),
        ("http://999.1.1.1/v1", "neither an address nor a name"),
        ("http://08.0.0.1/v1", "neither an address nor a name"),
        ("http://llm.example\\@127.0.0.1/v1", "backslashes"),
        ("http://llm .example/v1", "spaces"),
        ("http://llm.example:99999/v1", "does not parse"),
    ],
)
def test_urls_with_credentials_queries_or_odd_hosts_are_refused(url: str, problem: str) -> None:
    with pytest.raises(RefusedUrl, match=problem) as refused:
        validate_url(url)
    assert "sk-secret" not in str(refused.value)


def test_a_public_url_is_normalised_and_its_origin_kept() -> None:
    resolve = dns({"llm.example": [[PUBLIC]]})
    checked = safe_url("HTTPS://LLM.Example:443/v1/", OutboundPolicy(resolve=resolve))
    assert checked.url == "https://llm.example/v1" and checked.origin == ("https", "llm.example", 443)
    assert validate_url("http://[64:ff9b::808:808]/v1").url == "http://[64:ff9b::808:808]/v1"
    safe_url("http://[64:ff9b::808:808]/v1", OutboundPolicy())  # NAT64 of a public address: public
    with pytest.raises(RefusedUrl, match=re.escape("resolves to 10.0.0.7")):  # one private answer among public ones
        safe_url("https://mixed.example/v1", OutboundPolicy(resolve=dns({"mixed.example": [[PUBLIC, "10.0.0.7"]]})))


def test_the_guarded_transport_refuses_a_non_public_address_at_connect_time() -> None:
    """What validation missed (a URL stored before the guard, or any caller) the transport still refuses:
    the stub on 127.0.0.1 is never reached."""
    with openai_stub(_yes) as (url, requests):
        with httpx.Client(transport=GuardedTransport(OutboundPolicy())) as client:
            for target in (url, url.replace("127.0.0.1", "localhost")):
                with pytest.raises(RefusedUrl, match="not public"):
                    client.post(f"{target}/chat/completions", json={})
        assert requests == []


def test_dns_rebinding_is_caught_at_connect_time() -> None:
    """The name resolves to a public address when the URL is saved, and to 127.0.0.1 when the worker
    connects: the connection is refused then, and the stub gets nothing."""
    with openai_stub(_yes) as (url, requests):
        rebinding = dns({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
        policy = OutboundPolicy(resolve=rebinding)
        target = f"http://rebind.example:{_port(url)}/v1"
        assert safe_url(target, policy).url == target  # passes when saved
        judge = LlmJudge(LlmSettings(base_url=target, api_key="sk-stored", model="m"), policy=policy)
        assert judge.judge("a topic", "a message") is None
        judge.close()
        assert requests == []
        # The same name, allowed by the operator, connects (to the address the resolver gave): so it was
        # the guard that stopped the request above.
        allowed = OutboundPolicy.parse("rebind.example", resolve=dns({"rebind.example": [["127.0.0.1"]]}))
        judge = LlmJudge(LlmSettings(base_url=target, api_key="sk-stored", model="m"), policy=allowed)
        assert judge.judge("a topic", "a message") == Verdict(True, "stub")
        judge.close()
        assert len(requests) == 1 and requests[0]["path"] == "/v1/chat/completions"


def test_the_operators_allowlist_lets_the_loopback_through_only_when_configured() -> None:
    with openai_stub(_yes) as (url, requests):
        port = _port(url)
        settings = LlmSettings(base_url=url, api_key="sk-local", model="m")
        for allow in ("", "10.0.0.0/8", f"127.0.0.1:{port + 1}", f"localhost:{port}"):
            policy = OutboundPolicy.parse(allow)
            with pytest.raises(RefusedUrl):
                safe_url(url, policy)
            judge = LlmJudge(settings, policy=policy)
            assert judge.judge("t", "m") is None, allow
            judge.close()
        assert requests == []
        for allow in ("127.0.0.1", "127.0.0.0/8", f"127.0.0.1:{port}", f"10.0.0.0/8, 127.0.0.1:{port}"):
            policy = OutboundPolicy.from_env({ALLOW_ENV: allow})
            safe_url(url, policy)
            judge = LlmJudge(settings, policy=policy)
            assert judge.judge("t", "m") == Verdict(True, "stub"), allow
            judge.close()
        assert len(requests) == 4 and all(r["auth"] == "Bearer sk-local" for r in requests)
    with pytest.raises(ValueError, match=ALLOW_ENV):
        OutboundPolicy.from_env({ALLOW_ENV: "http://llm.internal/v1"})


def test_a_project_provider_saved_before_the_guard_judges_nothing() -> None:
    """Settings stored before this check (or written around the settings page) are checked again before
    the worker sends anything."""
    with openai_stub(_yes) as (url, requests):
        stored = {
            1: {"base_url": url, "api_key": "sk-1"},
            2: {"base_url": url.replace("127.0.0.1", "2130706433"), "api_key": "sk-2"},
            3: {"base_url": f"{url}?", "api_key": "sk-3"},
            4: {"base_url": url.replace("http://", "http://user:pw@"), "api_key": "sk-4"},
        }
        judges = Judges(None, lambda: stored)
        for project_pk in stored:
            judge = judges.for_project(project_pk)
            assert judge is None or judge.judge("t", "m") is None
        judges.close()
        assert requests == []
        allowed = Judges(None, lambda: stored, policy=OutboundPolicy.parse("127.0.0.1"))
        assert allowed.for_project(1).judge("t", "m") == Verdict(True, "stub")
        assert allowed.for_project(3) is None and allowed.for_project(4) is None  # refused whatever the host
        allowed.close()
        assert len(requests) == 1


def test_no_credentials_or_key_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request's URL at INFO: a password in the operator's URL must not appear there, and
    neither may the API key sent in the header, at any level."""
    caplog.set_level(logging.DEBUG)
    with openai_stub(_yes) as (url, requests):
        with_password = url.replace("http://", "http://admin:pw-in-url-123@")
        judge = LlmJudge(LlmSettings(base_url=with_password, api_key="sk-header-456", model="m"))
        assert judge.judge("t", "m") == Verdict(True, "stub")
        judge.close()
        guarded = LlmJudge(
            LlmSettings(base_url=url, api_key="sk-header-789", model="m"), policy=OutboundPolicy.parse("127.0.0.1")
        )
        assert guarded.judge("t", "m") == Verdict(True, "stub")
        guarded.close()
    assert len(requests) == 2
    logged = caplog.text
    assert "pw-in-url-123" not in logged and "admin:" not in logged
    assert "sk-header-456" not in logged and "sk-header-789" not in logged
    assert logged.count(f"HTTP Request: POST {url}/chat/completions") == 2  # logged, without the password
