"""PII scrubbing: quality on the labelled set, and that raw values never reach the database or a reply."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from conftest import CLI, REPO, Project, RunningServer, make_project
from convolens.enrich.pii import CARD_DUMMY, EMAIL_DUMMY, NI_DUMMY, SSN_DUMMY, scrub
from convolens.store import projects

EMAIL = "jane.roe@example.net"
CARD = "4539 1488 0343 6467"  # Luhn-valid test number
PHONE = "+44 20 7946 0958"
KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
# The targets, which the scrubber reaches on the held-out set today (recall 0.991, clean texts altered
# 0.012: bench/README.md), asserted so that a change that makes it worse fails.
HOLDOUT_RECALL_FLOOR = 0.99
HOLDOUT_ALTERED_CEILING = 0.02


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (REPO / "tests" / "data" / name).read_text().splitlines() if line.strip()]


def _evaluate(rows: list[dict]) -> dict:
    return runpy.run_path(str(REPO / "bench" / "pii_quality.py"))["evaluate"](rows)


@pytest.mark.parametrize("name", ["pii.jsonl", "pii_multilingual_tune.jsonl"])
def test_quality_on_the_labelled_sets_tuned_on(name: str) -> None:
    rows = _rows(name)
    assert sum(1 for r in rows if r["pii"]) >= 100 and sum(1 for r in rows if not r["pii"]) >= 80
    result = _evaluate(rows)
    assert result["recall"] >= 0.99, result["missed"]
    assert result["clean_altered"] <= 0.02, result["altered"]


def test_quality_on_the_held_out_set() -> None:
    """Written independently of the scrubber and never looked at row by row while tuning it: the fair
    judge. Only the aggregate figures are printed (pytest -s), never the rows."""
    rows = _rows("pii_multilingual_holdout.jsonl")
    result = _evaluate(rows)
    print(f"held-out set: recall {result['recall']:.3f}, clean texts altered {result['clean_altered']:.3f}")
    assert result["recall"] >= HOLDOUT_RECALL_FLOOR, f"recall {result['recall']:.3f}"
    assert result["clean_altered"] <= HOLDOUT_ALTERED_CEILING, f"clean altered {result['clean_altered']:.3f}"


# Where a message's language is spoken, in the order a national number is tried: a
# national number is valid in many regions at once (030 9018 2234 in DE, GB, IT, ...),
# so it is counted for the country its message's language points to, not for whichever
# region a set's iteration order happens to reach first.
_COUNTRIES_OF_LANGUAGE = {
    "en": ("US", "GB", "CA", "AU", "IE", "NZ", "IN"),
    "de": ("DE", "AT", "CH"),
    "fr": ("FR", "BE", "CH", "CA"),
    "es": ("ES", "MX", "AR", "CO"),
    "pt": ("BR", "PT"),
    "it": ("IT",),
    "nl": ("NL", "BE"),
    "tr": ("TR",),
    "ru": ("RU",),
    "ko": ("KR",),
    "ja": ("JP",),
    "zh": ("CN", "TW", "HK"),
    "hi": ("IN",),
    "vi": ("VN",),
}


def _country_of(number: str, text_language: str | None) -> str | None:
    import phonenumbers

    for region in _COUNTRIES_OF_LANGUAGE.get(text_language or "", ()):
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(number, region)):
                return region
        except phonenumbers.NumberParseException:
            continue
    return None


def test_the_labelled_sets_span_languages_and_countries() -> None:
    """At least 8 languages and national phone formats of at least 10 countries in the multilingual sets."""
    from convolens.enrich import language

    rows = _rows("pii_multilingual_tune.jsonl") + _rows("pii_multilingual_holdout.jsonl")
    languages = {language.detect(row["text"]) for row in rows} - {None}
    countries = {
        _country_of(item["value"], language.detect(row["text"]))
        for row in rows
        for item in row["pii"]
        if item["kind"] == "phone" and not item["value"].startswith("+")
    } - {None}
    assert len(languages) >= 8, languages
    assert len(countries) >= 10, countries


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"mail {EMAIL} now", f"mail {EMAIL_DUMMY} now"),
        (f"card {CARD}!", f"card {CARD_DUMMY}!"),
        ("ssn 123-45-6789.", f"ssn {SSN_DUMMY}."),
        ("NI AB123456C", f"NI {NI_DUMMY}"),
        (f"call {PHONE} today", "call [PHONE] today"),
        (f"key={KEY}", "key=[SECRET]"),
        ("card 4539 1488 0343 6468 is a typo", "card 4539 1488 0343 6468 is a typo"),  # fails Luhn: left alone
        ("Order 4539148803436467", f"Order {CARD_DUMMY}"),
        # Addresses glued to a particle of a script without spaces.
        ("메일은 minji.kim@naver.com으로 보내주세요", f"메일은 {EMAIL_DUMMY}으로 보내주세요"),
        ("連絡はtaro.yamada@docomo.ne.jpまでお願いします", f"連絡は{EMAIL_DUMMY}までお願いします"),
        # National numbers, by the numbering plans: Korea's mobiles, Japan's national and +81 forms.
        ("제 번호는 010-2345-6789입니다", "제 번호는 [PHONE]입니다"),
        ("電話番号は090-1234-5678です", "電話番号は[PHONE]です"),
        ("東京オフィス 03-3123-4567 まで", "東京オフィス [PHONE] まで"),
        ("海外からは+81 90-1234-5678へ", "海外からは[PHONE]へ"),
        ("Mastercard 5425 2334 3010 9903.", f"Mastercard {CARD_DUMMY}."),
        # A dashed part number is not grouped as any country writes its phone numbers.
        ("Please reorder 3127-884-905 for me", "Please reorder 3127-884-905 for me"),
        # Typed full-width, as Japanese input methods do: found; a clean full-width price left as it was.
        (
            "\u643a\u5e2f\uff1a\uff10\uff19\uff10\uff0d\uff11\uff12\uff13\uff14\uff0d\uff15\uff16\uff17\uff18",
            "\u643a\u5e2f\uff1a[PHONE]",
        ),
        (
            "\u4fa1\u683c\u306f\uff11\uff12\uff0c\uff18\uff10\uff10\u5186",
            "\u4fa1\u683c\u306f\uff11\uff12\uff0c\uff18\uff10\uff10\u5186",
        ),
        ("Mein Passwort ist Sommer2024!", "Mein Passwort ist [SECRET]"),
        ("Passwort vergessen, bitte helfen", "Passwort vergessen, bitte helfen"),
        # Dummies of an earlier rule are not scrubbed again as something else.
        ("SSN: 123-45-6789", f"SSN: {SSN_DUMMY}"),
    ],
)
def test_scrub_examples(text: str, expected: str) -> None:
    assert scrub(text).text == expected


def test_phone_regions_come_from_the_setting() -> None:
    from convolens.config import DEFAULT_PHONE_REGIONS, phone_regions
    from convolens.enrich.pii.phones import is_phone

    assert phone_regions({}) == DEFAULT_PHONE_REGIONS and "KR" in DEFAULT_PHONE_REGIONS
    assert phone_regions({"CONVOLENS_PHONE_REGIONS": "us, jp"}) == ("US", "JP")
    with pytest.raises(ValueError, match="CONVOLENS_PHONE_REGIONS"):
        phone_regions({"CONVOLENS_PHONE_REGIONS": "USA"})
    # A national number is judged by the plans of the expected regions only; "+country" by its own.
    assert is_phone("415-555-2671", ("US",)) and not is_phone("415-555-2671", ("GB", "DE"))
    assert is_phone("+1 415 555 2671", ("GB",))


def _contains_raw(values: list[str]) -> bool:
    joined = "\n".join(values)
    return any(raw in joined for raw in (EMAIL, CARD, PHONE, KEY, "123-45-6789"))


def _all_stored_text(server: RunningServer, project: Project) -> list[str]:
    from sqlalchemy import select

    from convolens.store.tables import conversation, message

    with server.db.reader() as conn:
        texts = [
            str(row)
            for row in conn.execute(
                select(message.c.content, message.c.metadata, message.c.extra, message.c.error).where(
                    message.c.project_pk == project.pk
                )
            )
        ]
        texts += [
            str(row)
            for row in conn.execute(
                select(conversation.c.metadata, conversation.c.feedback).where(conversation.c.project_pk == project.pk)
            )
        ]
    return texts


def test_native_ingest_is_scrubbed_before_storage(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        response = client.post(
            "/api/v1/ingest",
            json={
                "events": [
                    {"type": "conversation", "id": "c", "metadata": {"contact": EMAIL}, "feedback": f"call {PHONE}"},
                    {
                        "type": "message",
                        "conversation_id": "c",
                        "id": "m1",
                        "role": "user",
                        "content": f"my card is {CARD} and email {EMAIL}",
                        "metadata": {"note": "ssn 123-45-6789"},
                        "extra": {"tool": {"args": [KEY]}},
                    },
                    {
                        "type": "message",
                        "conversation_id": "c",
                        "id": "m2",
                        "role": "assistant",
                        "content": "ok",
                        "error": f"failed for {EMAIL}",
                    },
                    {"type": "event", "conversation_id": "c", "name": "Lead", "properties": {"phone": PHONE}},
                    {"type": "feedback", "conversation_id": "c", "feedback": f"reach {EMAIL}"},
                ]
            },
        )
        assert response.status_code == 202
        got = client.get("/api/v1/conversations/c").json()
    assert got["messages"][0]["message"] == f"my card is {CARD_DUMMY} and email {EMAIL_DUMMY}"
    assert got["metadata"] == {"contact": EMAIL_DUMMY}
    assert not _contains_raw(_all_stored_text(server, project))


def test_context_endpoints_are_scrubbed_and_upsert_still_continues(server: RunningServer, project: Project) -> None:
    history = [{"role": "user", "message": f"I'm {EMAIL}, card {CARD}"}, {"role": "assistant", "message": "thanks"}]
    meta = {"user_id": "u1", "phone": PHONE}
    with server.client(project.token) as client:
        first = client.post(
            "/api/v1/log/conversation/upsert", json={"conversation": {"messages": history, "metadata": meta}}
        )
        history.append({"role": "user", "message": "and my ssn is 123-45-6789"})
        second = client.post(
            "/api/v1/log/conversation/upsert", json={"conversation": {"messages": history, "metadata": meta}}
        )
        assert first.json()["data"]["id"] == second.json()["data"]["id"]
        thread = client.post(
            "/api/v1/log/conversation/thread",
            json={
                "conversation": {
                    "messages": [
                        {
                            "role": "user",
                            "message": f"key {KEY}",
                            "thought": f"mail {EMAIL}",
                            "input": {"to": EMAIL},
                            "observation": f"call {PHONE}",
                        }
                    ]
                }
            },
        )
        assert EMAIL not in thread.text and KEY not in thread.text  # not even in the reply
        got = client.get(f"/api/v1/conversations/{first.json()['data']['id']}").json()
    assert [m["message"] for m in got["messages"]] == [
        f"I'm {EMAIL_DUMMY}, card {CARD_DUMMY}",
        "thanks",
        f"and my ssn is {SSN_DUMMY}",
    ]
    assert got["metadata"] == {"user_id": "u1", "phone": "[PHONE]"}
    assert not _contains_raw(_all_stored_text(server, project))


def _every_stored_column(server: RunningServer, project: Project) -> str:
    from sqlalchemy import select

    from convolens.store.tables import conversation, end_user, message

    with server.db.reader() as conn:
        rows = [
            *conn.execute(select(message).where(message.c.project_pk == project.pk)),
            *conn.execute(select(conversation).where(conversation.c.project_pk == project.pk)),
            *conn.execute(select(end_user).where(end_user.c.project_pk == project.pk)),
        ]
    assert rows
    return "\n".join(str(tuple(row)) for row in rows)


def test_labels_and_keys_are_scrubbed_before_storage(server: RunningServer, project: Project) -> None:
    """Message ``name`` and ``model``, event names, and the keys of metadata, properties and tool
    inputs, on the native and on Context's endpoints."""
    with server.client(project.token) as client:
        native = client.post(
            "/api/v1/ingest",
            json={
                "events": [
                    {"type": "conversation", "id": "labels", "metadata": {EMAIL: "owner"}},
                    {
                        "type": "message",
                        "conversation_id": "labels",
                        "role": "assistant",
                        "content": "hello",
                        "name": f"agent {EMAIL}",
                        "model": f"ft:{KEY}",
                        "metadata": {f"callback {PHONE}": "yes"},
                        "extra": {"tool": {CARD: "on file"}},
                    },
                    {
                        "type": "event",
                        "conversation_id": "labels",
                        "name": f"Lead {EMAIL}",
                        "properties": {"ssn 123-45-6789": 1, "plan": "pro"},
                    },
                ]
            },
        )
        assert native.status_code == 202, native.text
        context = client.post(
            "/api/v1/log/conversation",
            json={
                "conversation": {
                    "metadata": {EMAIL: "vip"},
                    "messages": [
                        {"role": "user", "message": "hi", "name": EMAIL, "metadata": {PHONE: 1}},
                        {"role": "tool", "message": "done", "name": "lookup", "input": {EMAIL: {CARD: True}}},
                    ],
                }
            },
        )
        assert context.status_code == 201, context.text
        assert EMAIL not in context.text
    stored = _every_stored_column(server, project)
    assert not _contains_raw([stored]), stored
    assert EMAIL_DUMMY in stored and "[PHONE]" in stored and "[SECRET]" in stored and CARD_DUMMY in stored
    assert "'plan': 'pro'" in stored  # keys without PII are kept as they are


def test_free_form_fields_are_bounded_like_content(server: RunningServer, project: Project) -> None:
    """Tool inputs, thoughts, observations and ``extra`` are scrubbed like content, so they are bounded
    like content (``max_content_chars``): a 4xx naming the field, not minutes of scrubbing."""
    huge = "a." * 60_000  # 120,000 characters: over the 100,000 bound
    with server.client(project.token) as client:
        native = client.post(
            "/api/v1/ingest",
            json={"events": [{"type": "message", "conversation_id": "c", "role": "tool", "content": "ok",
                              "extra": {"tool": {"args": [huge[:60_000], huge[:60_000]]}}}]},
        )  # fmt: skip
        assert native.status_code == 422 and "events[0].extra" in native.text
        for field, value in (("thought", huge), ("observation", huge), ("input", {"doc": huge})):
            context = client.post(
                "/api/v1/log/conversation",
                json={"conversation": {"messages": [{"role": "tool", "message": "ok", field: value}]}},
            )
            assert context.status_code == 422 and f"conversation.messages[0].{field}" in context.text, field


def test_a_project_can_turn_scrubbing_off(server: RunningServer) -> None:
    project = make_project(server.db, "raw")
    with server.db.writer() as conn:
        assert projects.set_project_setting(conn, project.name, "pii_scrubbing", False)
    with server.client(project.token) as client:
        client.post(
            "/api/v1/ingest",
            json={"events": [{"type": "message", "conversation_id": "c", "role": "user", "content": f"email {EMAIL}"}]},
        )
        assert client.get("/api/v1/conversations/c").json()["messages"][0]["message"] == f"email {EMAIL}"


def test_errors_never_echo_the_raw_values(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        bad = client.post(
            "/api/v1/ingest",
            json={
                "events": [
                    {"type": "message", "conversation_id": "c", "role": "wizard", "content": f"{EMAIL} {CARD}"},
                    {"type": "message", "conversation_id": "c", "role": "user", "content": KEY * 200},
                ]
            },
        )
        assert bad.status_code == 422
        assert EMAIL not in bad.text and CARD not in bad.text and KEY not in bad.text


def test_the_projects_cli(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    cli = CLI
    subprocess.run([*cli, "tokens", "create", "--project", "p"], env=env, check=True, capture_output=True)
    off = subprocess.run(
        [*cli, "projects", "set", "--project", "p", "--pii", "off"], env=env, capture_output=True, text=True
    )
    assert off.returncode == 0 and "PII scrubbing off" in off.stdout
    missing = subprocess.run(
        [*cli, "projects", "set", "--project", "nope", "--pii", "on"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1


# -- names and places (the names extra, part of the dev extra) -----------------------------------------


def test_name_redaction_quality_on_the_labelled_set() -> None:
    evaluate = runpy.run_path(str(REPO / "bench" / "names_quality.py"))["evaluate"]
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "names.jsonl").read_text().splitlines()]
    assert sum(1 for r in rows if r["names"]) >= 40 and sum(1 for r in rows if not r["names"]) >= 40
    result = evaluate(rows)
    assert result["recall"] >= 0.95, result["missed"]
    assert result["clean_altered"] <= 0.1, result["altered"]


def test_names_are_redacted_only_where_the_project_asks(server: RunningServer) -> None:
    redacting, keeping = make_project(server.db, "names"), make_project(server.db, "no-names")
    with server.db.writer() as conn:
        assert projects.set_project_setting(conn, redacting.name, "pii_names", True)
    text = f"I'm Maria Gonzalez from Barcelona, mail me at {EMAIL}"
    for project in (redacting, keeping):
        with server.client(project.token) as client:
            native = client.post(
                "/api/v1/ingest",
                json={"events": [{"type": "message", "conversation_id": "n", "role": "user", "content": text},
                                 {"type": "conversation", "id": "n", "feedback": "Maria Gonzalez was rude"}]},
            )  # fmt: skip
            assert native.status_code == 202, native.text
            context = client.post(
                "/api/v1/log/conversation",
                json={"conversation": {"messages": [{"role": "user", "message": text},
                                                    {"role": "assistant", "message": "Hello!"}]}},
            )  # fmt: skip
            assert context.status_code == 201, context.text
            stored = client.get("/api/v1/conversations/n").json()
            logged = client.get("/api/v1/conversations/" + context.json()["data"]["id"]).json()
            for message in (stored["messages"][0]["message"], logged["messages"][0]["message"]):
                assert EMAIL not in message  # the regex scrubbing runs either way
                if project is redacting:
                    assert message == f"I'm [NAME] from [PLACE], mail me at {EMAIL_DUMMY}"
                else:
                    assert "Maria Gonzalez" in message and "Barcelona" in message
    with server.db.reader() as conn:
        joined = "\n".join(_all_stored_text_of(conn, redacting.pk))
    assert "Maria" not in joined and "Barcelona" not in joined and "[NAME]" in joined


def _all_stored_text_of(conn, project_pk: int) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from convolens.store.tables import conversation, message

    rows = conn.execute(select(message.c.content).where(message.c.project_pk == project_pk)).scalars().all()
    feedback = conn.execute(select(conversation.c.feedback).where(conversation.c.project_pk == project_pk)).scalars()
    return [*rows, *(f for f in feedback if f)]


def test_the_projects_cli_turns_names_on(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    subprocess.run([*CLI, "tokens", "create", "--project", "p"], env=env, check=True, capture_output=True)
    on = subprocess.run(
        [*CLI, "projects", "set", "--project", "p", "--pii-names", "on"], env=env, capture_output=True, text=True
    )
    assert on.returncode == 0 and "name and place redaction on" in on.stdout
    neither = subprocess.run([*CLI, "projects", "set", "--project", "p"], env=env, capture_output=True, text=True)
    assert neither.returncode == 2 and "--pii-names" in neither.stderr


def test_the_scrubbing_process_gets_texts_and_sends_back_only_changes() -> None:
    """A heavy batch is scrubbed in a child process (server/scrubbing_process.py): what goes there is
    the fields' plain values, not the batch's models, and what comes back is the changed fields alone,
    applied to the batch as in-place scrubbing would."""
    import pickle

    from convolens.enrich.pii import scrub_batch
    from convolens.schemas.ingest import IngestBatch

    def batch() -> IngestBatch:
        return IngestBatch.model_validate(
            {
                "events": [
                    {"type": "conversation", "id": "c", "metadata": {"contact": EMAIL}, "feedback": "fine"},
                    {"type": "message", "conversation_id": "c", "role": "user", "content": f"card {CARD}"},
                    {"type": "message", "conversation_id": "c", "role": "assistant", "content": "no PII here",
                     "model": "gpt-4o", "extra": {"n": 1}, "thought": f"mail {EMAIL}"},
                    {"type": "feedback", "conversation_id": "c", "feedback": f"call {PHONE}"},
                    {"type": "event", "conversation_id": "c", "name": "Checkout", "properties": {"to": EMAIL}},
                ]
            }
        )  # fmt: skip

    sent: list[bytes] = []
    returned: list[bytes] = []

    def in_another_process(function, *args):  # type: ignore[no-untyped-def]
        sent.append(pickle.dumps(args))
        returned.append(pickle.dumps(function(*pickle.loads(sent[-1]))))
        return pickle.loads(returned[-1])

    there, here = batch(), batch()
    found_there = scrub_batch(there, run=in_another_process)
    found_here = scrub_batch(here)
    assert there.model_dump() == here.model_dump() and found_there == found_here
    assert b"pydantic" not in sent[0] and b"convolens.schemas" not in sent[0]
    changes, _found = pickle.loads(returned[0])
    assert sorted((i, attribute) for i, attribute, _ in changes) == [
        (0, "metadata"), (1, "content"), (2, "thought"), (3, "feedback"), (4, "properties"),
    ]  # fmt: skip
    assert here.events[1].content == f"card {CARD_DUMMY}" and here.events[0].metadata == {"contact": EMAIL_DUMMY}
    assert here.events[2].content == "no PII here" and here.events[3].feedback == "call [PHONE]"
