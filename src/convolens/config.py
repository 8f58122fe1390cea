"""Settings read from the environment (``CONVOLENS_*``), with the embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry. Over a bound: 413 (size) or 422 (shape), never a 500."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_decompressed_bytes: int = 50 * 1024 * 1024
    max_batch_events: int = 1000
    max_messages_per_conversation: int = 2000
    max_content_chars: int = 100_000
    max_metadata_keys: int = 64
    max_metadata_key_chars: int = 128
    max_metadata_value_chars: int = 2048
    max_id_chars: int = 128
    max_tenant_chars: int = 128
    max_per_page: int = 100
    # Requests per second per API token (0 turns the limit off), and the burst allowed above it.
    rate_limit_per_second: int = 100
    rate_limit_burst: int = 200
    # A client must send its whole body within this many seconds (slow-loris guard): else 408.
    body_timeout_seconds: int = 30

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        values = {}
        for name in cls.__dataclass_fields__:
            raw = env.get(f"CONVOLENS_{name.upper()}")
            if raw is not None:
                try:
                    values[name] = int(raw)
                except ValueError as exc:
                    raise ValueError(f"CONVOLENS_{name.upper()} must be an integer, got {raw!r}") from exc
        return cls(**values)


# Where a phone number written without "+country" may be from: the PII scrubber tries these numbering
# plans in order (enrich/pii/phones.py). The biggest markets by default; CONVOLENS_PHONE_REGIONS
# (comma-separated ISO 3166 codes) narrows or widens it for a deployment.
DEFAULT_PHONE_REGIONS = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "TR", "RU",
    "JP", "KR", "CN", "TW", "IN", "ID", "BR", "MX", "AU", "CA",
)  # fmt: skip


def phone_regions(env: dict[str, str] | None = None) -> tuple[str, ...]:
    env = os.environ if env is None else env
    raw = env.get("CONVOLENS_PHONE_REGIONS", "").strip()
    if not raw:
        return DEFAULT_PHONE_REGIONS
    regions = tuple(part.strip().upper() for part in raw.split(",") if part.strip())
    bad = [r for r in regions if len(r) != 2 or not r.isalpha()]
    if bad:
        raise ValueError(f"CONVOLENS_PHONE_REGIONS must list two-letter region codes, got {bad[0]!r}")
    return regions


def default_home() -> Path:
    return Path(os.environ.get("CONVOLENS_HOME", ".convolens"))


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{(home / 'convolens.sqlite3').resolve()}"


@dataclass(frozen=True)
class LlmSettings:
    """An OpenAI-compatible chat endpoint for LLM topics (and, later, suggestion names). Off unless set."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str = "gpt-4o-mini"
    timeout_seconds: float = 30.0
    concurrency: int = 8

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LlmSettings:
        env = os.environ if env is None else env
        return cls(
            base_url=(env.get("CONVOLENS_LLM_BASE_URL") or "").rstrip("/") or None,
            api_key=env.get("CONVOLENS_LLM_API_KEY") or None,
            model=env.get("CONVOLENS_LLM_MODEL") or cls.model,
        )


@dataclass(frozen=True)
class Settings:
    database_url: str
    home: Path
    limits: Limits = field(default_factory=Limits)
    # Enrich in a thread of the API process. On by default (one command is all a user runs); a
    # scale-out deployment turns it off and runs `convolens worker` processes instead.
    embedded_worker: bool = True
    llm: LlmSettings = field(default_factory=LlmSettings)

    @classmethod
    def from_env(cls) -> Settings:
        home = default_home()
        url = os.environ.get("CONVOLENS_DATABASE_URL") or sqlite_url(home)
        embedded = os.environ.get("CONVOLENS_EMBEDDED_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")
        return cls(
            database_url=url, home=home, limits=Limits.from_env(), embedded_worker=embedded, llm=LlmSettings.from_env()
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
