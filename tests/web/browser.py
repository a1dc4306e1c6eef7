"""Driving the SPA in Debian's Chromium with Playwright (never a downloaded browser).

The steps are written the way a person uses the app: by the visible labels, roles and button
names (which is also what keeps the forms accessible), never by CSS classes.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Media must play without a user gesture's autoplay policy getting in the way of a test.
    "--autoplay-policy=no-user-gesture-required",
]
PASSWORD = "plum-orbit-canyon-47"


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, base_url: str, *, phone: bool = False) -> tuple[BrowserContext, Page]:
    viewport: ViewportSize = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 860}
    context = browser.new_context(base_url=base_url, viewport=viewport, is_mobile=phone, has_touch=phone)
    context.set_default_timeout(15_000)
    page = context.new_page()
    return context, page


def sign_up(page: Page, *, name: str, email: str, password: str = PASSWORD) -> None:
    page.goto("/signup")
    page.get_by_label("Display name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def submit_log_in(page: Page, *, email: str, password: str = PASSWORD) -> None:
    """Fill the log-in form already on the page and send it (the outcome is the caller's to check)."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def become_creator(page: Page, channel: str) -> None:
    page.get_by_role("link", name="Become a creator").click()
    page.get_by_label("Channel name").fill(channel)
    page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name="Studio")).to_be_visible()


def upload(page: Page, *, title: str, tags: str, price: str, file: Path) -> str:
    """Upload ``file`` through the studio's form; the new video's id (from the page it lands on)."""
    page.get_by_role("link", name="Upload a video").first.click()
    page.get_by_label("Title").fill(title)
    page.get_by_label("Tags").fill(tags)
    page.get_by_label("Price per minute").fill(price)
    page.get_by_label("Video file").set_input_files(str(file))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/studio/videos/[0-9a-f-]+$"), timeout=60_000)
    return page.url.rsplit("/", 1)[-1]


def top_up(scope: Page | Locator, amount: str, *, card: str = "Test card (always succeeds)") -> None:
    """Fill the top-up form (on the wallet page or in the player's dialog) and pay."""
    form = scope.get_by_role("form", name="Top up")
    form.get_by_label("Amount", exact=True).fill(amount)
    form.get_by_label("Card").select_option(label=card)
    form.get_by_role("button", name=re.compile(r"^Add ")).click()


def video_time(page: Page) -> float:
    return float(page.evaluate("() => document.querySelector('video').currentTime"))
