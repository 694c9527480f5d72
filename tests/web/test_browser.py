"""The dashboard and the playground in a real browser (Debian's chromium driven by Playwright).

Without chromium the tests skip with the reason, except under CI (the `CI` variable), where they fail.
Screenshots land in test-artifacts/ at the repository root.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.runtime import Runtime
from bot.web.server import build_web_app
from tests.web.conftest import TOKEN, Filled, local_playground

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 15_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — CI must run the browser tests (bash .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM_INSTALLED:
        _unavailable(f"chromium is not installed at {CHROMIUM} (apt-get install chromium chromium-driver)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def serve(runtime: Runtime) -> AsyncIterator[str]:
    runner = web.AppRunner(build_web_app(runtime, playground=local_playground(runtime)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def base_url(filled: Filled) -> AsyncIterator[str]:
    async for url in serve(filled.runtime):
        yield url


class Page:
    """A browser tab that records console errors (a CSP violation shows up as one)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))


async def open_page(browser: Any) -> Page:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    return Page(await context.new_page())


async def test_review_flow_list_filter_inspect_correct_and_chart(browser: Any, base_url: str) -> None:
    tab = await open_page(browser)
    page = tab.page
    await page.goto(f"{base_url}/decisions")
    rows = page.locator("table.decisions tbody tr")
    assert await rows.count() == 6
    # The message with markup is shown as text, not run.
    assert await page.locator("td.text", has_text="<script>alert").count() == 1
    assert await page.locator("td.text img").count() == 0

    await page.select_option("select[name=route]", "technical")
    await page.click(".filters button[type=submit]")
    await page.wait_for_url(re.compile(r"route=technical"))
    assert await rows.count() >= 1
    assert set(await rows.evaluate_all("rows => rows.map(r => r.dataset.route)")) == {"technical"}

    await rows.first.locator("td.text a").click()
    await page.wait_for_url(re.compile(r"/conversations/\d+"))
    card = page.locator("section.decision").first
    await card.wait_for()
    assert "technical" in await card.locator("h2").inner_text()
    assert await card.locator("svg.scores rect").count() >= 2
    assert await card.locator("dd.reason").inner_text()

    await card.locator("select[name=route]").select_option("billing")
    await card.locator("input[name=reviewer]").fill("Browser Reviewer")
    await card.locator("button", has_text="Save correction").click()
    await page.locator(".flash", has_text="Correction saved: technical → billing").wait_for(timeout=WAIT_MS)
    assert await page.locator("section.decision .by-correction").count() == 1

    await page.goto(f"{base_url}/decisions?decided_by=correction")
    assert await rows.count() == 1
    assert await rows.first.get_attribute("data-route") == "billing"
    assert await rows.first.locator(".by-correction").inner_text() == "correction"

    await page.click("nav >> text=Overview")
    chart = page.locator('svg[data-chart="messages-per-route"]')
    await chart.wait_for()
    assert int(await chart.get_attribute("data-points") or 0) == 6
    assert await chart.locator("rect.bar").count() >= 1
    box = await chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 80
    for name in ("escalation-rate", "vote-agreement", "latency", "cost-per-route"):
        assert await page.locator(f'svg[data-chart="{name}"] rect').count() >= 1, name
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
    assert tab.errors == []


async def test_playground_send_reply_escalate_and_acknowledge(browser: Any, base_url: str) -> None:
    tab = await open_page(browser)
    page = tab.page
    await page.goto(f"{base_url}/")
    await page.wait_for_url(re.compile(r"/playground"))

    await page.fill("#new-text", "I was charged twice this month")
    await page.click("#new-message button[type=submit]")
    bot = page.locator("#items .item.kind-bot")
    await bot.first.wait_for(timeout=WAIT_MS)
    assert "billing specialist" in await bot.first.inner_text()
    decision = page.locator("#items .item.kind-customer .decision")
    await decision.first.wait_for(timeout=WAIT_MS)
    assert "billing" in await decision.first.inner_text()

    await page.fill("#reply-text", "It was invoice <b>INV-42</b>")
    await page.click("#reply-customer button[type=submit]")
    await page.locator("#items .item.kind-bot").nth(1).wait_for(timeout=WAIT_MS)
    assert await page.locator("#items b").count() == 0
    assert await page.locator("#items .item.kind-customer", has_text="<b>INV-42</b>").count() == 1

    await page.fill("#new-text", "This is the third time I write, let me speak to a human now")
    await page.click("#new-message button[type=submit]")
    pending = page.locator('#pages li.page[data-state="paged"]')
    await pending.first.wait_for(timeout=WAIT_MS)
    assert "speak to a human" in await pending.first.inner_text()
    await page.locator("#thread-state", has_text="escalated").wait_for(timeout=WAIT_MS)
    await pending.first.locator("button[data-action=acknowledge]").click()
    await page.locator('#pages li.page[data-state="acknowledged"]').wait_for(timeout=WAIT_MS)
    await page.locator("#items .item.kind-notice", has_text="is on it").wait_for(timeout=WAIT_MS)

    await page.fill("#staff-text", "Hi, I'm Dana from support, calling you in 5 minutes")
    await page.click("#reply-staff button[type=submit]")
    await page.locator("#items .item.kind-staff").wait_for(timeout=WAIT_MS)
    await page.locator("#thread-state", has_text="taken over").wait_for(timeout=WAIT_MS)

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    await page.click("#inspect")
    await page.wait_for_url(re.compile(r"/conversations/\d+"))
    await page.locator(".timeline li", has_text="acknowledged").wait_for()
    assert tab.errors == []


async def test_login_with_the_token_in_the_browser(browser: Any, token_runtime: Runtime) -> None:
    async for base in serve(token_runtime):
        tab = await open_page(browser)
        page = tab.page
        await page.goto(f"{base}/decisions")
        await page.wait_for_url(re.compile(r"/login\?next="))
        await page.fill("input[name=token]", "wrong")
        await page.click("form button[type=submit]")
        await page.locator(".errors", has_text="not right").wait_for()
        await page.fill("input[name=token]", TOKEN)
        await page.click("form button[type=submit]")
        await page.wait_for_url(re.compile(r"/decisions$"))
        assert await page.locator("table.decisions tbody tr").count() == 2
        cookies = await page.context.cookies()
        [session] = [c for c in cookies if c["name"] == "supportbot_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        await page.click("text=Log out")
        await page.wait_for_url(re.compile(r"/login"))
        # A failed login shows as a 401 resource error in the console; nothing else may fail.
        assert all("401" in error for error in tab.errors), tab.errors
