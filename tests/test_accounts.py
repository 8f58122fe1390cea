"""Dashboard accounts under attack, over real HTTP on both backends: the sign-in limit (per client and per
e-mail, counted before argon2 runs), members added by e-mail only with an answer that does not reveal
whether the account existed, bounded ids in URLs, the password policy, first sign-in with a password an
admin chose, and the Secure cookie flag behind a TLS proxy."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from conftest import CLI, RunningServer, ServeProcess, make_project
from convolens.store import accounts
from convolens.store.db import Database
from web_support import PASSWORD, Account, add_account, launch_chromium, screenshot, signed_in

COMMON = ["password1234", "qwertyuiop", "Summer2024!", "1234567890", "iloveyou2024"]


class CountingHasher(PasswordHasher):
    """argon2's own hasher, counting the verifications it runs (each one is the cost a guess imposes)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    # The test server runs in a thread of this process, so the store uses this hasher for real.
    counting = CountingHasher()
    monkeypatch.setattr(accounts, "_hasher", counting)
    return counting


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client_address() -> str:
    """A client address of its own for each test, sent as X-Forwarded-For from 127.0.0.1 (a proxy the test
    server trusts), so that one test's failed sign-ins do not use up another's allowance."""
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{(value >> 16) % 250 + 1}"


def _login_form(client: httpx.Client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)


def _sign_in(client: httpx.Client, token: str, email: str, password: str, client_address: str) -> httpx.Response:
    data = {"email": email, "password": password, "csrf_token": token, "next": "/"}
    return client.post("/login", data=data, headers={"X-Forwarded-For": client_address})


# -- the sign-in limit ------------------------------------------------------------------------------------


def _attempts_until_refused(guess: Callable[[int], httpx.Response], most: int) -> list[int]:
    """Statuses of guesses made one after another until one is refused (429), at most ``most``."""
    statuses = [guess(0).status_code]
    while statuses[-1] == 401 and len(statuses) < most:
        statuses.append(guess(len(statuses)).status_code)
    return statuses


# The limits refill with time (an address gets one attempt per 6 s, a client one per 2 s), so the tests
# allow a few more attempts than the burst while the guesses run, far fewer than a bypass would give.


def test_spellings_of_an_email_share_one_limit_and_a_limited_guess_costs_no_hash(
    sqlite_server: RunningServer, hasher: CountingHasher
) -> None:
    server = sqlite_server
    email = f"{_unique('victim')}@example.com"
    add_account(server.db, email, make_project(server.db).name, "viewer")
    local, domain = email.split("@")
    spellings = [email.upper(), f"  {email}", f"{email}\t", f"{local.title()}@{domain.upper()}", f" {email.upper()} "]
    address = _client_address()
    with server.client() as client:
        token = _login_form(client)
        # With a limit per spelling, each of the five would get 10 attempts of its own.
        statuses = _attempts_until_refused(
            lambda i: _sign_in(client, token, spellings[i % 5], f"guess {i}", address), most=40
        )
        assert statuses[-1] == 429 and 10 <= statuses.count(401) < 15
        assert hasher.verified == statuses.count(401)
        # Even the right password waits, in any spelling, and nothing of it is hashed.
        assert _sign_in(client, token, email.title(), PASSWORD, address).status_code == 429
        assert _sign_in(client, token, email, PASSWORD, address).status_code == 429
        assert hasher.verified == statuses.count(401)


def test_an_email_is_limited_however_many_client_addresses_guess(
    sqlite_server: RunningServer, hasher: CountingHasher
) -> None:
    server = sqlite_server
    email = f"{_unique('target')}@example.com"
    add_account(server.db, email, make_project(server.db).name, "viewer")
    with server.client() as client:
        token = _login_form(client)
        statuses = _attempts_until_refused(
            lambda i: _sign_in(client, token, email, f"guess {i}", _client_address()), most=30
        )
        assert statuses[-1] == 429 and 10 <= statuses.count(401) < 15
        assert _sign_in(client, token, email, PASSWORD, _client_address()).status_code == 429
        assert hasher.verified == statuses.count(401)
        # Another e-mail from a fresh address is not held up.
        assert _sign_in(client, token, f"{_unique('x')}@example.com", "guess", _client_address()).status_code == 401


def test_a_client_is_limited_across_emails_unknown_ones_included(
    sqlite_server: RunningServer, hasher: CountingHasher
) -> None:
    address = _client_address()
    with sqlite_server.client() as client:
        token = _login_form(client)
        statuses = _attempts_until_refused(
            lambda i: _sign_in(client, token, f"{_unique('nobody')}@example.com", "guess", address), most=60
        )
        # Unknown e-mails cost a (dummy) hash like known ones, until the client's 30 attempts are used.
        assert statuses[-1] == 429 and 30 <= statuses.count(401) < 45
        assert hasher.verified == statuses.count(401)


def test_attempts_arriving_together_are_counted_before_hashing(
    sqlite_server: RunningServer, hasher: CountingHasher
) -> None:
    server = sqlite_server
    email = f"{_unique('rushed')}@example.com"
    add_account(server.db, email, make_project(server.db).name, "viewer")
    with server.client() as first:
        token = _login_form(first)
        cookies = dict(first.cookies)

    def attempt(i: int) -> int:
        with httpx.Client(base_url=server.base_url, cookies=cookies, timeout=60) as client:
            return _sign_in(client, token, email, f"guess {i}", _client_address()).status_code

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(attempt, range(24)))
    # Counted after the hash, all 24 would have been checked before the first failure was recorded.
    assert 10 <= statuses.count(401) < 14 and statuses.count(401) + statuses.count(429) == 24
    assert hasher.verified == statuses.count(401)


# -- members and ids in URLs ----------------------------------------------------------------------------------


@pytest.fixture
def admin(server: RunningServer) -> Iterator[tuple[httpx.Client, str]]:
    project = make_project(server.db).name
    account = add_account(server.db, f"{_unique('admin')}@example.com", project, "admin")
    with signed_in(server, account) as client:
        client.email = account.email  # type: ignore[attr-defined]
        yield client, project


def test_accounts_of_other_projects_cannot_be_added_by_number(
    server: RunningServer, admin: tuple[httpx.Client, str]
) -> None:
    client, project = admin
    elsewhere = add_account(server.db, f"{_unique('elsewhere')}@example.com", make_project(server.db).name, "admin")
    with server.db.reader() as conn:
        elsewhere_pk = accounts.account_pk(conn, elsewhere.email)
    missing_pk = elsewhere_pk + 10_000
    for pk in (elsewhere_pk, missing_pk):
        answer = client.post(f"/p/{project}/settings/members/{pk}", data={"role": "admin", "csrf_token": client.csrf})
        assert answer.status_code == 404 and "no such member" in answer.text
    settings_page = client.get(f"/p/{project}/settings").text
    assert elsewhere.email not in settings_page


def test_adding_by_email_answers_alike_whether_the_account_existed(
    server: RunningServer, admin: tuple[httpx.Client, str]
) -> None:
    client, first_project = admin
    second_project = make_project(server.db).name
    add_account(server.db, client.email, second_project, "admin")
    existing = add_account(server.db, f"{_unique('known')}@example.com", make_project(server.db).name, "viewer")
    new_email = f"{_unique('unknown')}@example.com"

    def add(project: str, email: str) -> tuple[int, str]:
        answer = client.post(
            f"/p/{project}/settings/members", data={"email": email, "role": "member", "csrf_token": client.csrf}
        )
        password = re.search(r'id="account-password">([^<]+)<', answer.text).group(1)
        # The page's main part, less what differs by project anyway: its name, its tokens, the keys in URLs.
        main = re.search(r"<main>.*</main>", answer.text, re.DOTALL).group(0)
        main = re.sub(r'<table class="list" id="tokens">.*?</table>', "", main, flags=re.DOTALL)
        main = re.sub(r"/settings/members/\d+", "/settings/members/N", main)
        return answer.status_code, main.replace(password, "PASSWORD").replace(email, "EMAIL").replace(project, "P")

    assert add(first_project, existing.email) == add(second_project, new_email)
    with server.db.reader() as conn:
        # The existing account keeps its own password; the new one has the one shown, to be changed.
        assert accounts.verify(conn, existing.email, PASSWORD) is not None
        new_pk = accounts.account_pk(conn, new_email)
        assert (new_pk, new_email, "member") in accounts.members(conn, server_project_pk(server.db, second_project))


def server_project_pk(db: Database, name: str) -> int:
    from convolens.store import projects

    with db.reader() as conn:
        return projects.get_project_pk(conn, name)


@pytest.mark.parametrize("pk", ["0", "-1", str(2**63), str(2**64), "9" * 40])
def test_ids_in_urls_out_of_range_are_refused_naming_the_parameter(admin: tuple[httpx.Client, str], pk: str) -> None:
    client, project = admin
    revoke = client.post(f"/p/{project}/settings/tokens/{pk}/revoke", data={"csrf_token": client.csrf})
    member = client.post(f"/p/{project}/settings/members/{pk}", data={"role": "viewer", "csrf_token": client.csrf})
    assert (revoke.status_code, member.status_code) == (422, 422)
    assert "token_pk" in revoke.text and "account_pk" in member.text


# -- passwords --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [*COMMON, "short"])
def test_account_creation_refuses_common_and_short_passwords(db: Database, password: str) -> None:
    with db.writer() as conn, pytest.raises(ValueError, match="password"):
        accounts.create_account(conn, f"{_unique('weak')}@example.com", password, accounts_now())
    with db.writer() as conn, pytest.raises(ValueError, match="password"):
        # The e-mail's own parts are among the first guesses too.
        accounts.create_account(conn, "jonathan.smithers@example.com", "jonathan.smithers", accounts_now())


def accounts_now():  # type: ignore[no-untyped-def]
    from convolens.timeutil import utcnow

    return utcnow()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVOLENS_HOME": str(home)}
    env.pop("CONVOLENS_DATABASE_URL", None)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_set_password_cli(tmp_path: Path) -> None:
    email = "ops@example.com"
    weak_create = _cli(tmp_path, "users", "create", "--email", email, "--role", "admin", "--project", "p",
                       "--password", "password1234")  # fmt: skip
    assert weak_create.returncode == 2 and "password" in weak_create.stderr
    made = _cli(tmp_path, "users", "create", "--email", email, "--role", "admin", "--project", "p",
                "--password", PASSWORD)  # fmt: skip
    assert made.returncode == 0, made.stderr
    refused = _cli(tmp_path, "users", "set-password", "--email", email, "--password", "qwertyuiop")
    assert refused.returncode == 2 and "password: too easy to guess" in refused.stderr
    missing = _cli(tmp_path, "users", "set-password", "--email", "nobody@example.com")
    assert missing.returncode == 1 and "no dashboard account" in missing.stderr
    chosen = _cli(
        tmp_path, "users", "set-password", "--email", " OPS@example.com", "--password", "violet ember lantern"
    )
    assert chosen.returncode == 0, chosen.stderr
    db = Database(f"sqlite:///{tmp_path / 'convolens.sqlite3'}")
    with db.reader() as conn:
        pk = accounts.verify(conn, email, "violet ember lantern")
        assert pk is not None and accounts.verify(conn, email, PASSWORD) is None
    generated = _cli(tmp_path, "users", "set-password", "--email", email)
    password = re.search(r"shown once, to be changed at next sign-in\): (\S+)", generated.stdout).group(1)
    with db.writer() as conn:
        assert accounts.verify(conn, email, password) == pk
        assert accounts.session(
            conn, accounts.start_session(conn, pk, accounts_now()), accounts_now()
        ).must_change_password
    db.dispose()


def test_first_sign_in_with_an_admin_chosen_password_must_change_it(
    server: RunningServer, admin: tuple[httpx.Client, str]
) -> None:
    admin_client, project = admin
    email = f"{_unique('invited')}@example.com"
    added = admin_client.post(
        f"/p/{project}/settings/members", data={"email": email, "role": "viewer", "csrf_token": admin_client.csrf}
    )
    one_time = re.search(r'id="account-password">([^<]+)<', added.text).group(1)
    with server.client() as client:
        token = _login_form(client)
        signed = client.post(
            "/login", data={"email": email, "password": one_time, "csrf_token": token, "next": f"/p/{project}/users"}
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == f"/account/password?next=%2Fp%2F{project}%2Fusers"
        # Until it is changed, every other page sends the browser back, and no form acts.
        for path in (f"/p/{project}/overview", f"/p/{project}/conversations", "/"):
            refused = client.get(path)
            assert refused.status_code == 303 and refused.headers["location"].startswith("/account/password")
        form = client.get("/account/password")
        assert form.status_code == 200 and "set by an administrator" in form.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        change = {"csrf_token": csrf, "current": one_time, "next": f"/p/{project}/users"}
        for common in COMMON[:2]:
            weak = client.post("/account/password", data={**change, "new": common, "repeat": common})
            assert weak.status_code == 422 and "new: " in weak.text
        wrong = client.post(
            "/account/password", data={**change, "current": "not it", "new": PASSWORD, "repeat": PASSWORD}
        )
        assert wrong.status_code == 401
        differ = client.post("/account/password", data={**change, "new": PASSWORD, "repeat": PASSWORD + "x"})
        assert differ.status_code == 422 and "repeat" in differ.text
        assert client.get(f"/p/{project}/overview").status_code == 303
        changed = client.post("/account/password", data={**change, "new": PASSWORD, "repeat": PASSWORD})
        assert changed.status_code == 303 and changed.headers["location"] == f"/p/{project}/users"
        assert client.get(f"/p/{project}/overview").status_code == 200
    with server.db.reader() as conn:
        assert accounts.verify(conn, email, one_time) is None
    with signed_in(server, Account(email)) as again:
        assert again.get(f"/p/{project}/overview").status_code == 200


# -- the Secure flag behind a TLS proxy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "forwarded_https", "secure"),
    [
        ({"CONVOLENS_TRUSTED_PROXIES": "127.0.0.1"}, True, True),
        ({"CONVOLENS_TRUSTED_PROXIES": "10.0.0.0/8"}, True, False),  # the peer is not a trusted proxy
        ({"CONVOLENS_TRUSTED_PROXIES": "", "CONVOLENS_SECURE_COOKIES": "always"}, False, True),
    ],
)
def test_cookies_are_secure_behind_a_trusted_tls_proxy(
    tmp_path: Path, env: dict[str, str], forwarded_https: bool, secure: bool
) -> None:
    served = ServeProcess(tmp_path, extra_env={"CONVOLENS_EMBEDDED_WORKER": "0", **env})
    served.start()
    try:
        headers = {"X-Forwarded-Proto": "https"} if forwarded_https else {}
        login = httpx.get(f"{served.base_url}/login", headers=headers)
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("convolens_login_csrf=")
        assert ("; secure" in cookie.lower()) is secure, cookie
    finally:
        served.stop()


def test_trusted_proxies_must_be_addresses() -> None:
    from convolens.config import Settings, trusted_proxies

    assert trusted_proxies(" 10.0.0.0/8, ::1 ,") == ("10.0.0.0/8", "::1")
    assert trusted_proxies("") == ()
    with pytest.raises(ValueError, match=r"CONVOLENS_TRUSTED_PROXIES: 'proxy\.internal'"):
        trusted_proxies("10.0.0.1,proxy.internal")
    assert Settings(database_url="sqlite://", home=Path(".")).secure_cookies == "auto"


def test_the_change_password_page_in_chromium(sqlite_server: RunningServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    server = sqlite_server
    project = make_project(server.db).name
    admin_account = add_account(server.db, f"{_unique('admin')}@example.com", project, "admin")
    email = f"{_unique('newcomer')}@example.com"
    with signed_in(server, admin_account) as admin_client:
        added = admin_client.post(
            f"/p/{project}/settings/members", data={"email": email, "role": "viewer", "csrf_token": admin_client.csrf}
        )
    one_time = re.search(r'id="account-password">([^<]+)<', added.text).group(1)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.base_url).new_page()
        page.goto(f"/p/{project}/overview")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", one_time)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/account/password\?next="))
        expect(page.locator("#change-password")).to_contain_text("set by an administrator")
        page.fill("input[name=current]", one_time)
        page.fill("input[name=new]", "password1234")
        page.fill("input[name=repeat]", "password1234")
        page.click("#change-password button[type=submit]")
        expect(page.locator("#change-password .error")).to_contain_text("new: too easy to guess")
        screenshot(page, "change-password-refused")
        page.fill("input[name=current]", one_time)
        page.fill("input[name=new]", PASSWORD)
        page.fill("input[name=repeat]", PASSWORD)
        page.click("#change-password button[type=submit]")
        expect(page).to_have_url(re.compile(rf"/p/{project}/overview$"))
        browser.close()


def test_an_ipv6_client_is_counted_by_its_64_prefix() -> None:
    from convolens.server.web.signin_limit import SignInLimit, client_key

    limit = SignInLimit()
    statuses = [limit.admit(f"2001:db8:1:2::{i:x}", f"u{i}@example.com") for i in range(31)]
    assert statuses[:30] == [0.0] * 30 and statuses[30] > 0
    assert limit.admit("2001:db8:1:3::1", "other@example.com") == 0.0
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"


def test_the_last_admin_cannot_demote_themselves_through_the_add_form(
    server: RunningServer, admin: tuple[httpx.Client, str]
) -> None:
    client, project = admin
    form = {"email": client.email.upper(), "role": "viewer", "csrf_token": client.csrf}
    kept = client.post(f"/p/{project}/settings/members", data=form)
    assert kept.status_code == 409 and "at least one admin" in kept.text
    assert client.get(f"/p/{project}/settings").status_code == 200
