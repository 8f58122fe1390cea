"""``GET /api/v1/metrics``: figures by bucket and group, checked against what was ingested."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import Project, RunningServer


def _conversation(cid: str, day: str, user: str, tenant: str, plan: str, model: str, rating: int | None) -> list[dict]:
    return [
        {"type": "conversation", "id": cid, "user_id": user, "tenant_id": tenant, "metadata": {"plan": plan}},
        {"type": "message", "conversation_id": cid, "id": f"{cid}-u", "role": "user",
         "content": "Thanks, I need a refund for my invoice!", "timestamp": f"{day}T10:00:00Z"},
        {"type": "message", "conversation_id": cid, "id": f"{cid}-a", "role": "assistant",
         "content": "Sure, the refund is on its way.", "timestamp": f"{day}T10:00:05Z", "model": model,
         "input_tokens": 1000, "output_tokens": 2000, "rating": rating},
    ]  # fmt: skip


@pytest.fixture
def seeded(server: RunningServer, project: Project) -> httpx.Client:
    with server.client(project.admin_token) as client:
        assert (
            client.post(
                "/api/v1/topics", json={"name": "Refunds", "kind": "keyword", "keywords": ["refund"]}
            ).status_code
            == 201
        )
        events = (
            _conversation("c1", "2026-11-02", "u1", "acme", "pro", "gpt-4o-mini", 1)
            + _conversation("c2", "2026-11-02", "u2", "acme", "free", "gpt-4o-mini-2024-07-18", -1)
            + _conversation("c3", "2026-11-03", "u1", "globex", "pro", "my-own-model", None)
        )
        assert client.post("/api/v1/ingest", json={"events": events}).status_code == 202
        deadline = time.monotonic() + 60
        while any(
            m["sentiment"] is None
            for c in ("c1", "c2", "c3")
            for m in client.get(f"/api/v1/conversations/{c}").json()["messages"]
            if m["role"] == "user"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield client


WINDOW = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-04T00:00:00Z"}


def series(client: httpx.Client, **params: str) -> dict:
    response = client.get("/api/v1/metrics", params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    return {s["group"]: s["data"] for s in response.json()["series"]}


def test_totals_per_day(seeded: httpx.Client) -> None:
    data = series(seeded)["all"]
    assert set(data) == {"2026-11-02", "2026-11-03"}
    day = data["2026-11-02"]
    assert (day["conversations"], day["messages"], day["user_messages"], day["users"]) == (2, 4, 2, 2)
    assert (day["ratings_up"], day["ratings_down"], day["rating_share_up"]) == (1, 1, 0.5)
    assert day["avg_sentiment"] is not None and day["avg_sentiment"] > 0
    # gpt-4o-mini: $0.15 per million in, $0.60 out; the dated model name is priced by its prefix
    assert day["cost_usd"] == pytest.approx(2 * (1000 * 0.15 + 2000 * 0.60) / 1e6)
    assert data["2026-11-03"]["unpriced_models"] == ["my-own-model"]
    assert data["2026-11-03"]["cost_usd"] == 0


def test_weekly_users_are_distinct(seeded: httpx.Client) -> None:
    (week,) = series(seeded, period="week")["all"].values()
    assert (week["conversations"], week["users"]) == (3, 2)


def test_groups(seeded: httpx.Client) -> None:
    by_tenant = series(seeded, group_by="tenant")
    assert {t: sum(b["conversations"] for b in d.values()) for t, d in by_tenant.items()} == {"acme": 2, "globex": 1}
    by_plan = series(seeded, group_by="metadata.plan")
    assert {p: sum(b["messages"] for b in d.values()) for p, d in by_plan.items()} == {"pro": 4, "free": 2}
    by_topic = series(seeded, group_by="topic")
    assert {t: sum(b["user_messages"] for b in d.values()) for t, d in by_topic.items()} == {"Refunds": 3}
    # A topic's ratings and costs are those of the answers in its conversations (users rate answers).
    refunds = by_topic["Refunds"]
    assert (sum(b["ratings_up"] for b in refunds.values()), sum(b["ratings_down"] for b in refunds.values())) == (1, 1)
    assert sum(b["output_tokens"] for b in refunds.values()) == 3 * 2000
    by_language = series(seeded, group_by="language")
    assert set(by_language) == {"en"}
    by_model = series(seeded, group_by="model")
    assert set(by_model) == {"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "my-own-model", "(none)"}
    assert series(seeded, tenant_id="globex")["all"].keys() == {"2026-11-03"}


@pytest.mark.parametrize(("params", "field"), [({"group_by": "colour"}, "group_by"), ({"period": "year"}, "period"),
                                               ({"start_time": "yesterday"}, "start_time"),
                                               ({"group_by": 'metadata.a"b'}, "group_by"),
                                               ({"group_by": "metadata.a\nb"}, "group_by"),
                                               ({"group_by": "metadata."}, "group_by")])  # fmt: skip
def test_bad_parameters_are_422s_naming_the_field(api: httpx.Client, params: dict, field: str) -> None:
    response = api.get("/api/v1/metrics", params=params)
    assert response.status_code == 422 and field in response.text


def test_odd_metadata_keys_and_tenants_are_plain_values(api: httpx.Client) -> None:
    for params in (
        {"group_by": "metadata.$.a[0] b'"},
        {"tenant_id": "x'; DROP TABLE message; --"},
        {"tenant_id": "\x00"},
    ):
        response = api.get("/api/v1/metrics", params=params)
        assert response.status_code in (200, 422), (params, response.text)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/metrics", "/api/v1/conversations", "/api/v1/conversations/series/volume", "/api/v1/suggested_topics"],
)
def test_a_tenant_id_with_a_nul_is_a_422(api: httpx.Client, path: str) -> None:
    response = api.get(path, params={"tenant_id": "a\x00b"})
    assert response.status_code == 422 and "tenant_id" in response.text
