"""Settings read from the environment (``CONVOLENS_*``), with the embedded defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from convolens.outbound import OutboundPolicy


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
    # A message's free-form JSON (``extra``; Context's ``input``): its size as JSON and how deep it nests.
    max_extra_bytes: int = 64 * 1024
    max_extra_depth: int = 32
    max_per_page: int = 100
    # Requests per second per API token, and the burst allowed above it: off (0) unless an operator
    # sets one. A healthy app is not capped; a saturated server sheds load instead (the next bound).
    rate_limit_per_second: int = 0
    rate_limit_burst: int = 200
    # Write requests one API process holds at once (admitted, not yet answered); past it, 503 with
    # Retry-After before the body is read (server/asgi/load_shedding.py). 0 turns the bound off.
    max_writes_in_flight: int = 256
    # A client must send its whole body within this many seconds (slow-loris guard): else 408.
    body_timeout_seconds: int = 30
    # Topics a project may define (active ones; suggestions are bounded by the clustering and do not
    # count until accepted), and the size of one: every message of the project is matched against them.
    max_topics_per_project: int = 100
    max_keywords_per_topic: int = 50
    max_keyword_chars: int = 100
    max_examples_per_topic: int = 20

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
class SmtpSettings:
    """The operator's mail server for alert e-mails and digests (``CONVOLENS_SMTP_*``); no host, no e-mail.
    The host is the operator's choice, never a project admin's (projects choose only the recipients), so
    it is not held to the outbound guard. The password is never logged or shown back (``repr`` omits it)."""

    host: str | None = None
    port: int = 587
    tls: str = "starttls"  # starttls | implicit | none
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "convolens@localhost"
    # A CA bundle to verify the server's certificate with, besides the system's (an internal CA).
    ca_file: str | None = None
    timeout: float = 20.0

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings:
        env = os.environ if env is None else env
        tls = (env.get("CONVOLENS_SMTP_TLS") or "starttls").strip().lower()
        if tls not in ("starttls", "implicit", "none"):
            raise ValueError(f"CONVOLENS_SMTP_TLS must be starttls, implicit or none, got {tls!r}")
        raw_port = (env.get("CONVOLENS_SMTP_PORT") or "").strip()
        if raw_port and (not raw_port.isdigit() or not 0 < int(raw_port) < 65536):
            raise ValueError(f"CONVOLENS_SMTP_PORT must be a port number, got {raw_port!r}")
        port = int(raw_port) if raw_port else {"starttls": 587, "implicit": 465, "none": 25}[tls]
        return cls(
            host=(env.get("CONVOLENS_SMTP_HOST") or "").strip() or None,
            port=port,
            tls=tls,
            user=env.get("CONVOLENS_SMTP_USER") or None,
            password=env.get("CONVOLENS_SMTP_PASSWORD") or None,
            sender=(env.get("CONVOLENS_SMTP_FROM") or cls.sender).strip(),
            ca_file=env.get("CONVOLENS_SMTP_CA_FILE") or None,
        )


@dataclass(frozen=True)
class Settings:
    database_url: str
    home: Path
    limits: Limits = field(default_factory=Limits)
    # Enrich in a child process of the server (worker/process.py). On by default (one command is all a user runs); a
    # scale-out deployment turns it off and runs `convolens worker` processes instead.
    embedded_worker: bool = True
    llm: LlmSettings = field(default_factory=LlmSettings)
    # What URLs set by project admins (their LLM provider) may reach beyond the public internet:
    # CONVOLENS_OUTBOUND_ALLOW, the operator's to set, never a project admin's.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    # Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-Proto and X-Forwarded-For are
    # believed: the scheme decides the cookies' Secure flag, the address the sign-in limit's key.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Session cookies' Secure flag: auto follows the request's scheme (as a trusted proxy reports it).
    secure_cookies: str = "auto"
    # A project's first suggested topics come once this many enriched user messages no topic covers
    # (CONVOLENS_SUGGEST_MIN_MESSAGES); fewer make no clusters worth showing.
    suggest_min_messages: int = 40
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    # Where people open the dashboard (CONVOLENS_PUBLIC_URL), for the links in alert e-mails and digests.
    public_url: str = "http://localhost:8000"

    @classmethod
    def from_env(cls) -> Settings:
        home = default_home()
        url = os.environ.get("CONVOLENS_DATABASE_URL") or sqlite_url(home)
        embedded = os.environ.get("CONVOLENS_EMBEDDED_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")
        return cls(
            database_url=url,
            home=home,
            limits=Limits.from_env(),
            embedded_worker=embedded,
            llm=LlmSettings.from_env(),
            outbound=OutboundPolicy.from_env(),
            trusted_proxies=trusted_proxies(os.environ.get("CONVOLENS_TRUSTED_PROXIES", "127.0.0.1,::1")),
            secure_cookies=secure_cookies(os.environ.get("CONVOLENS_SECURE_COOKIES", "auto")),
            suggest_min_messages=positive_int("CONVOLENS_SUGGEST_MIN_MESSAGES", 40),
            smtp=SmtpSettings.from_env(),
            public_url=(os.environ.get("CONVOLENS_PUBLIC_URL") or cls.public_url).rstrip("/"),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def trusted_proxies(raw: str) -> tuple[str, ...]:
    """``CONVOLENS_TRUSTED_PROXIES``: comma-separated addresses or networks; empty trusts none. A typo
    is an error here rather than a proxy silently distrusted."""
    entries = tuple(item.strip() for item in raw.split(",") if item.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ValueError(f"CONVOLENS_TRUSTED_PROXIES: {entry!r} is not an IP address or network") from exc
    return entries


def secure_cookies(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "always", "never"):
        raise ValueError(f"CONVOLENS_SECURE_COOKIES must be auto, always or never, got {raw!r}")
    return value


def positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)
