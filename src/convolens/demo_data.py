"""A deterministic generator of realistic chat conversations, for the demo, tests and benchmarks.

Users come back (some daily, most once), ask about a handful of topics in several languages, rate some
answers, and now and then trigger product events. Same seed, same data.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# (topic, language) → list of (user question, assistant answer). Short on purpose: variety comes
# from combining them, follow-ups and the mood lines below.
DIALOGUES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("billing", "en"): [
        (
            "Why was I charged twice this month?",
            "I can see two charges; the second is a pending authorisation that will drop off within 3 days.",
        ),
        (
            "How do I change my plan from Pro to Team?",
            "Go to Settings → Billing → Change plan and pick Team; the difference is prorated.",
        ),
        (
            "Can I get an invoice with my company VAT number?",
            "Yes: add the VAT number under Billing details and download the invoice again.",
        ),
    ],
    ("billing", "ko"): [
        ("이번 달에 왜 두 번 결제되었나요?", "두 번째 결제는 3일 안에 사라지는 임시 승인입니다."),
        ("요금제를 팀 플랜으로 바꾸려면 어떻게 하나요?", "설정 → 결제 → 요금제 변경에서 팀을 선택하세요."),
    ],
    ("coding", "en"): [
        (
            "How do I read a CSV file with pandas and skip the first two rows?",
            "Use pd.read_csv('file.csv', skiprows=2).",
        ),
        (
            "My Python script says ModuleNotFoundError: No module named requests",
            "Install it in the same environment: python -m pip install requests.",
        ),
        (
            "What's the difference between a list and a tuple in Python?",
            "Lists are mutable, tuples are immutable and hashable, so tuples can be dict keys.",
        ),
        (
            "The code you gave me doesn't compile, it says missing semicolon",
            "Sorry about that: add a semicolon after the return statement on line 4.",
        ),
    ],
    ("coding", "ko"): [
        ("파이썬에서 리스트를 정렬하는 방법을 알려주세요", "sorted(my_list) 또는 my_list.sort()를 사용하세요."),
        ("자바스크립트에서 배열 중복을 제거하려면?", "[...new Set(arr)]를 사용하면 됩니다."),
    ],
    ("coding", "ja"): [
        ("Pythonで辞書をJSONに変換する方法は？", "json.dumps(data, ensure_ascii=False) を使います。"),
    ],
    ("travel", "en"): [
        (
            "Do I need a visa to visit Japan for two weeks?",
            "Many passports get 90 days visa-free; check the list for your nationality.",
        ),
        (
            "What's the cheapest way from Heathrow to central London?",
            "The Elizabeth line is the best value; the Piccadilly line is cheapest but slower.",
        ),
    ],
    ("travel", "es"): [
        ("¿Necesito visado para viajar a Canadá?", "Con pasaporte español necesitas una eTA, no un visado."),
        ("¿Cuál es la mejor época para visitar Kioto?", "Primavera (cerezos) u otoño (hojas rojas)."),
    ],
    ("travel", "fr"): [
        ("Quel est le meilleur moyen d'aller de Paris à Lyon ?", "Le TGV : deux heures, centre à centre."),
    ],
    ("recipes", "en"): [
        (
            "Give me a quick vegetarian dinner with chickpeas",
            "Try a chickpea curry: onion, garlic, tomatoes, coconut milk, 20 minutes.",
        ),
        (
            "How long should I boil an egg for a runny yolk?",
            "Six and a half minutes from boiling water, then into cold water.",
        ),
    ],
    ("recipes", "de"): [
        (
            "Wie mache ich einen einfachen Hefeteig?",
            "500 g Mehl, 1 Päckchen Hefe, 300 ml Wasser, Salz; eine Stunde gehen lassen.",
        ),
    ],
    ("account", "en"): [
        (
            "I can't log in, it says my password is wrong",
            "Use 'Forgot password' to get a reset link; it is valid for one hour.",
        ),
        (
            "How do I delete my account and all my data?",
            "Settings → Privacy → Delete account. It is permanent after 30 days.",
        ),
    ],
    ("account", "ko"): [
        ("비밀번호를 잊어버렸어요", "로그인 화면에서 '비밀번호 찾기'를 눌러 재설정 링크를 받으세요."),
    ],
}

FOLLOW_UPS = {
    "en": [
        ("Thanks, that worked perfectly!", "Glad it helped!"),
        ("That's not what I asked.", "Sorry, let me try again: could you say a bit more?"),
        ("It still doesn't work.", "Let's check step by step: what error do you see now?"),
        ("Can you explain that in more detail?", "Sure: here is the longer version with an example."),
    ],
    "ko": [
        ("감사합니다, 해결됐어요!", "도움이 되어 기쁩니다!"),
        ("여전히 안 돼요.", "어떤 오류가 나오는지 알려주시겠어요?"),
    ],
    "es": [("¡Gracias, muy útil!", "¡Me alegra ayudar!")],
    "fr": [("Merci beaucoup !", "Avec plaisir !")],
    "de": [("Danke, hat geklappt!", "Gern geschehen!")],
    "ja": [("ありがとうございます！", "どういたしまして！")],
}

MODELS = [("gpt-4o-mini", 0.6), ("gpt-4o", 0.25), ("claude-3-5-sonnet", 0.15)]
PLANS = ["free", "pro", "team"]
TENANTS = ["acme", "globex", "initech", None]
SYSTEM_PROMPT = "You are a helpful assistant for the Example app. Answer briefly."


@dataclass
class DemoConversation:
    id: str
    user_id: str
    tenant_id: str | None
    started_at: datetime
    metadata: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_events(self) -> list[dict[str, Any]]:
        """This conversation in the native ingest format."""
        out: list[dict[str, Any]] = [
            {
                "type": "conversation",
                "id": self.id,
                "user_id": self.user_id,
                "tenant_id": self.tenant_id,
                "metadata": self.metadata,
                "timestamp": self.started_at.isoformat() + "Z",
            }
        ]
        out += [{"type": "message", "conversation_id": self.id, **m} for m in self.messages]
        out += [{"type": "event", "conversation_id": self.id, **e} for e in self.events]
        return out


def generate(
    n: int, *, seed: int = 42, now: datetime | None = None, days: int = 30, users: int | None = None
) -> Iterator[DemoConversation]:
    rng = random.Random(seed)
    now = now or datetime(2026, 1, 1)
    user_count = users or max(5, n // 4)
    keys = list(DIALOGUES)
    # Zipf-like: a few users hold most conversations, as in real products.
    weights = [1 / (rank + 1) for rank in range(user_count)]
    for _ in range(n):
        user = rng.choices(range(user_count), weights)[0]
        topic, lang = keys[rng.randrange(len(keys))]
        started = now - timedelta(days=rng.random() * days)
        model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        conv = DemoConversation(
            id=str(uuid.UUID(int=rng.getrandbits(128))),
            user_id=f"user-{user:04d}",
            tenant_id=TENANTS[user % len(TENANTS)],
            started_at=started,
            metadata={"model": model, "plan": PLANS[user % len(PLANS)], "app_version": f"1.{user % 4}"},
        )
        at = started
        turns = [rng.choice(DIALOGUES[(topic, lang)])]
        turns += rng.sample(FOLLOW_UPS[lang], k=rng.randint(0, min(2, len(FOLLOW_UPS[lang]))))
        conv.messages.append(_message(rng, "system", SYSTEM_PROMPT, at))
        for question, answer in turns:
            at += timedelta(seconds=rng.randint(5, 90))
            conv.messages.append(_message(rng, "user", question, at))
            at += timedelta(seconds=rng.uniform(0.5, 6))
            reply = _message(rng, "assistant", answer, at)
            reply.update(
                model=model,
                input_tokens=rng.randint(40, 900),
                output_tokens=rng.randint(20, 400),
                latency_ms=round(rng.uniform(300, 4000), 1),
            )
            if rng.random() < 0.3:
                reply["rating"] = 1 if "not" not in question and "still" not in question else -1
            conv.messages.append(reply)
        if rng.random() < 0.1:
            conv.events.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "name": "Upgrade clicked",
                    "properties": {"plan": "team"},
                    "timestamp": _iso(at),
                }
            )
        yield conv


def _message(rng: random.Random, role: str, content: str, at: datetime) -> dict[str, Any]:
    return {"id": str(uuid.UUID(int=rng.getrandbits(128))), "role": role, "content": content, "timestamp": _iso(at)}


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds") + "Z"
