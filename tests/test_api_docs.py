"""``/docs``: Swagger UI from the package, under the dashboard's Content-Security-Policy, loading nothing
from another origin; and it works: Chromium renders every operation with no CSP violation."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import expect, sync_playwright

from conftest import RunningServer
from convolens.server.web.render import CONTENT_SECURITY_POLICY
from web_support import launch_chromium, screenshot


def test_docs_page_is_same_origin_under_the_dashboards_policy(sqlite_server: RunningServer) -> None:
    page = httpx.get(f"{sqlite_server.base_url}/docs")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY and "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all(body.strip() == "" for _, body in scripts), "no inline script"
    assets = [m for attrs, _ in scripts for m in re.findall(r'src="([^"]+)"', attrs)]
    assets += re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
    assert len(assets) == 3
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url  # this origin only
        assert httpx.get(f"{sqlite_server.base_url}{url}").status_code == 200, url
    assert httpx.get(f"{sqlite_server.base_url}/redoc").status_code == 404  # ReDoc came from a CDN too
    assert httpx.get(f"{sqlite_server.base_url}/openapi.json").json()["paths"]


def test_swagger_ui_renders_every_operation_without_a_policy_violation(sqlite_server: RunningServer) -> None:
    spec = httpx.get(f"{sqlite_server.base_url}/openapi.json").json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            elsewhere: list[str] = []
            origin = urlsplit(sqlite_server.base_url).netloc
            page.on("request", lambda r: elsewhere.append(r.url) if urlsplit(r.url).netloc != origin else None)
            page.goto(f"{sqlite_server.base_url}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            assert page.locator(".opblock").count() == operations
            assert page.locator(".opblock-summary-path", has_text="/api/v1/users/{user_id}").count() == 1
            page.locator(".opblock-summary", has_text="/api/v1/ingest").first.click()  # it expands: the UI runs
            page.wait_for_selector(".opblock.is-open .opblock-body")
            health = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/healthz"))
            health.locator(".opblock-summary").click()
            health.locator("button.try-out__btn").click()  # and calls the API, as connect-src 'self' allows
            health.locator("button.execute").click()
            expect(health.locator(".live-responses-table tr.response td.response-col_status")).to_have_text("200")
            screenshot(page, "api-docs")
            page.screenshot(path="/tmp/api-docs.png")
        finally:
            browser.close()
    assert problems == [], problems  # a CSP violation is reported on the console
    assert elsewhere == [], elsewhere
