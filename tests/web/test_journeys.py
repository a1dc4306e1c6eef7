"""The web app in real Chromium against `streamify up`: the journeys people take through it.

A creator signs up, starts a channel and uploads a generated clip through the page, which becomes
ready; a viewer tops up, finds it by search, plays it (the <video>'s currentTime advances and the
meter shows charges), runs out of money, gets the top-up dialog, pays and carries on; the
creator's analytics show the view and the revenue. Screenshots of the main pages are taken on the
way (`make screenshots` writes them to docs/screenshots).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from tests.conftest import ROOT
from tests.e2e.test_stack import Stack
from tests.media import make_video
from tests.web.browser import (
    PASSWORD,
    become_creator,
    new_page,
    sign_up,
    submit_log_in,
    top_up,
    upload,
    video_time,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRANSCODE_TIMEOUT_MS = 180_000


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _shoot(page: Page, folder: Path, name: str, *, full_page: bool = True) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000, f"{name}: the screenshot looks blank"


def test_sign_up_log_out_log_in_and_stay_signed_in(web_stack: Stack, browser: Browser) -> None:
    context, page = new_page(browser, web_stack.url)
    email = f"sam-{_tag()}@example.com"

    # The form explains what is wrong in words, and keeps what was typed.
    page.goto("/signup")
    page.get_by_label("Display name").fill("Sam")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("password", re.I))
    expect(page.get_by_label("Email")).to_have_value(email)

    sign_up(page, name="Sam", email=email)
    expect(page.get_by_text("Sam", exact=True)).to_be_visible()

    # A reload keeps the session: the access token is only in memory, the HttpOnly cookie renews it.
    page.reload()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert "refresh" not in page.evaluate("() => document.cookie")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()

    page.goto("/login")
    submit_log_in(page, email=email, password="not-the-password-at-all")
    expect(page.get_by_role("alert")).to_have_text("That email and password don't match an account.")

    # A page that needs an account sends you to log in and back.
    page.goto("/wallet")
    page.wait_for_url(re.compile(r"/login\?next=%2Fwallet$"))
    submit_log_in(page, email=email)
    page.wait_for_url(re.compile(r"/wallet$"))
    expect(page.get_by_test_id("wallet-balance")).to_have_text("$0.00")
    context.close()


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """A `streamify` command addressed at the stack (same data directory and environment)."""
    return subprocess.run(
        [sys.executable, "-m", "streamify.cli", *args, "--data-dir", str(stack.data_dir)],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_upload_watch_pay_and_see_analytics(
    web_stack: Stack, browser: Browser, screenshots: Path, tmp_path: Path
) -> None:
    tag = _tag()
    title = f"Harbour lights {tag}"
    # 480p: two renditions (360p and 480p; the ladder never upscales), for the quality selector.
    clip = make_video(tmp_path / "harbour.mp4", size="854x480", seconds=24)

    # The creator: sign up, start a channel, upload through the page, watch it become ready.
    creator_context, creator = new_page(browser, web_stack.url)
    sign_up(creator, name="Cora", email=f"cora-{tag}@example.com")
    become_creator(creator, f"Cora's films {tag}")
    video_id = upload(creator, title=title, tags="harbour, night", price="0.25", file=clip)
    expect(creator.get_by_test_id("video-status")).to_have_text("Ready", timeout=TRANSCODE_TIMEOUT_MS)
    creator.get_by_role("link", name="← Studio").click()
    expect(creator.get_by_role("link", name=title)).to_be_visible()
    _shoot(creator, screenshots, "studio")

    # The viewer: top up 1.00 (four 25-cent units), find the video by search.
    viewer_context, viewer = new_page(browser, web_stack.url)
    sign_up(viewer, name="Vic", email=f"vic-{tag}@example.com")
    viewer.get_by_role("link", name="Wallet").click()
    top_up(viewer, "1.00")
    expect(viewer.get_by_test_id("wallet-balance")).to_have_text("$1.00")
    viewer.get_by_label("Search").fill(f"harbour {tag}")
    viewer.get_by_role("button", name="Search").click()
    expect(viewer.get_by_role("heading", name=f"Results for “harbour {tag}”")).to_be_visible()
    _shoot(viewer, screenshots, "search")
    viewer.get_by_role("link", name=title).click()
    viewer.wait_for_url(re.compile(f"/videos/{video_id}$"))

    # The price shows before anything is charged.
    expect(viewer.get_by_test_id("price")).to_have_text("$0.25 per minute")
    _shoot(viewer, screenshots, "watch-before-playing", full_page=False)
    viewer.get_by_role("button", name="Play").click()
    viewer.wait_for_function("() => document.querySelector('video').currentTime > 1", timeout=30_000)
    expect(viewer.get_by_test_id("meter-charged")).not_to_have_text("$0.00")

    # The money runs out: playback stops and the dialog asks for a top-up.
    dialog = viewer.get_by_role("dialog", name="Top up to keep watching")
    expect(dialog).to_be_visible(timeout=40_000)
    expect(viewer.get_by_test_id("meter-charged")).to_have_text("$1.00")
    expect(viewer.get_by_test_id("meter-balance")).to_have_text("$0.00")
    stopped_at = video_time(viewer)
    assert viewer.evaluate("() => document.querySelector('video').paused")
    _shoot(viewer, screenshots, "watch-top-up", full_page=False)

    # Paying continues the same session from where it stopped.
    top_up(dialog, "5.00")
    expect(dialog).to_be_hidden()
    viewer.wait_for_function(
        f"() => document.querySelector('video').currentTime > {stopped_at + 2}", timeout=30_000
    )
    expect(viewer.get_by_test_id("meter-charged")).not_to_have_text("$1.00")
    _shoot(viewer, screenshots, "watch", full_page=False)

    # Likes, comments and the channel's subscribe button.
    viewer.get_by_role("button", name=re.compile("^Like")).click()
    expect(viewer.get_by_role("button", name=re.compile("^Like"))).to_have_attribute("aria-pressed", "true")
    expect(viewer.get_by_role("button", name=re.compile("^Like"))).to_contain_text("1")
    viewer.get_by_label("Add a comment").fill(f"Lovely lights {tag}")
    viewer.get_by_role("button", name="Post comment").click()
    expect(viewer.get_by_text(f"Lovely lights {tag}")).to_be_visible()
    posted = viewer.locator(".comment-list li", has_text=f"Lovely lights {tag}")
    expect(posted.locator(".comment-author")).to_have_text("Vic")
    expect(posted).to_contain_text("(you)")
    viewer.get_by_role("link", name=f"Cora's films {tag}").click()
    viewer.get_by_role("button", name="Subscribe").click()
    expect(viewer.get_by_role("button", name="Unsubscribe")).to_be_visible()
    expect(viewer.get_by_text("1 subscriber", exact=False)).to_be_visible()
    viewer.reload()
    expect(viewer.get_by_role("button", name="Unsubscribe")).to_be_visible()

    # History and wallet tell the viewer what happened.
    viewer.get_by_role("link", name="Wallet").click()
    expect(viewer.get_by_role("cell", name=re.compile("Watching")).first).to_be_visible()
    _shoot(viewer, screenshots, "wallet")
    viewer.get_by_role("link", name="History").click()
    expect(viewer.get_by_role("link", name=title)).to_be_visible()

    # Coming back offers to resume where the last session stopped, in the quality you pick.
    viewer.get_by_role("link", name=title).click()
    viewer.get_by_role("button", name=re.compile(r"^Resume from \d+:\d\d$")).click()
    viewer.wait_for_function("() => document.querySelector('video').currentTime > 8", timeout=30_000)
    quality = viewer.get_by_label("Quality")
    expect(quality.locator("option")).to_have_text(["Auto", "480p", "360p"])
    quality.select_option("360p")
    resumed_at = video_time(viewer)
    viewer.wait_for_function(
        f"() => document.querySelector('video').currentTime > {resumed_at + 1}", timeout=30_000
    )
    viewer.get_by_role("link", name="Wallet").click()

    # The creator's analytics show the view and the revenue (from the event bus, within seconds).
    creator.goto("/studio/analytics")
    deadline = time.monotonic() + 30
    while creator.get_by_test_id("total-views").inner_text() != "1" and time.monotonic() < deadline:
        time.sleep(1)
        creator.reload()
    expect(creator.get_by_test_id("total-views")).to_have_text("1")
    revenue = creator.get_by_test_id("total-revenue").inner_text()
    assert revenue not in ("$0.00", ""), revenue
    expect(creator.get_by_test_id("earnings-total")).to_have_text(revenue)
    _shoot(creator, screenshots, "analytics")
    creator.get_by_role("link", name=title).first.click()
    expect(creator.get_by_text("Audience retention", exact=False)).to_be_visible()

    # Home lists it for everyone (signed out too).
    anonymous_context, anonymous = new_page(browser, web_stack.url)
    anonymous.goto("/")
    expect(anonymous.get_by_role("link", name=title).first).to_be_visible()
    _shoot(anonymous, screenshots, "home")

    # An administrator sees the platform's figures, this session among them.
    admin_email = f"ada-{tag}@example.com"
    made = _cli(web_stack, "create-admin", "--email", admin_email, "--password", PASSWORD)
    assert made.returncode == 0, made.stdout + made.stderr
    admin_context, admin = new_page(browser, web_stack.url)
    admin.goto("/login")
    submit_log_in(admin, email=admin_email)
    admin.get_by_role("link", name="Admin").click()
    expect(admin.get_by_role("heading", name="Platform, last 30 days")).to_be_visible()
    expect(admin.get_by_test_id("platform-sessions")).not_to_have_text("0")
    _shoot(admin, screenshots, "admin")

    for context in (creator_context, viewer_context, anonymous_context, admin_context):
        context.close()
    verify = _cli(web_stack, "billing", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_upload_resumes_after_a_page_reload(web_stack: Stack, browser: Browser, tmp_path: Path) -> None:
    """The connection dies after the first 8 MiB chunk; after a reload the creator picks the same
    file and tus carries on from the server's offset instead of starting again."""
    tag = _tag()
    clip = make_video(tmp_path / "big.mp4", seconds=4, bitrate="24M", noise=True)
    assert clip.stat().st_size > 9 * 1024 * 1024
    context, page = new_page(browser, web_stack.url)
    sign_up(page, name="Una", email=f"una-{tag}@example.com")
    become_creator(page, f"Una uploads {tag}")

    patches: list[dict[str, Any]] = []

    def cut_after_first_chunk(route: Route, request: Request) -> None:
        if request.method == "PATCH":
            patches.append(dict(request.headers))
            if len(patches) > 1:
                route.abort("connectionreset")
                return
        route.continue_()

    page.route("**/api/v1/uploads/**", cut_after_first_chunk)
    page.get_by_role("link", name="Upload a video").first.click()
    page.get_by_label("Title").fill(f"Big file {tag}")
    page.get_by_label("Video file").set_input_files(str(clip))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("The upload stopped", timeout=60_000)
    assert int(patches[0]["upload-offset"]) == 0

    page.unroute("**/api/v1/uploads/**")

    resumed: list[int] = []

    def record_offset(request: Request) -> None:
        if request.method == "PATCH" and "/api/v1/uploads/" in request.url:
            resumed.append(int(request.headers["upload-offset"]))

    page.on("request", record_offset)
    page.reload()
    expect(page.get_by_role("heading", name="Unfinished uploads")).to_be_visible()
    page.get_by_label(f"File for “Big file {tag}”").set_input_files(str(clip))
    page.wait_for_url(re.compile(r"/studio/videos/[0-9a-f-]+$"), timeout=60_000)
    assert resumed and resumed[0] >= 8 * 1024 * 1024, resumed
    expect(page.get_by_test_id("video-status")).not_to_have_text(re.compile("Waiting|Uploading"))

    # The studio edits and deletes it.
    page.get_by_label("Title").fill(f"Renamed {tag}")
    page.get_by_label("Visibility").select_option("unlisted")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    expect(page.get_by_role("heading", name=f"Renamed {tag}")).to_be_visible()
    page.get_by_role("link", name="← Studio").click()
    row = page.get_by_role("row").filter(has_text=f"Renamed {tag}")
    expect(row).to_contain_text("unlisted")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete Renamed {tag}").click()
    expect(page.get_by_text("No videos yet.")).to_be_visible()
    context.close()


def test_pages_work_on_a_phone_with_labels_and_a_keyboard(
    web_stack: Stack, browser: Browser, screenshots: Path
) -> None:
    context, page = new_page(browser, web_stack.url, phone=True)
    tag = _tag()
    page.goto("/signup")
    page.get_by_label("Display name").fill("Pia")
    page.get_by_label("Email").fill(f"pia-{tag}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/$"))
    # On a phone the navigation folds into a menu button, which the keyboard opens.
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    menu.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    _shoot(page, screenshots, "phone-menu", full_page=False)

    for path in ("/", "/login", "/wallet", "/history", "/studio", "/subscriptions", "/search?q=anything"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        problems = page.evaluate(
            """() => {
              const problems = [];
              const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
              for (const control of document.querySelectorAll('input, select, textarea')) {
                if (control.type === 'hidden') continue;
                const labels = [...(control.labels || [])].filter(visible);
                if (!labels.length) problems.push(`unlabelled: ${control.outerHTML.slice(0, 80)}`);
              }
              for (const button of document.querySelectorAll('button, a[href]')) {
                const name = (button.getAttribute('aria-label') || button.textContent || '').trim();
                if (!name) problems.push(`unnamed: ${button.outerHTML.slice(0, 80)}`);
              }
              if (document.documentElement.scrollWidth > window.innerWidth + 1)
                problems.push(`wider than the screen: ${document.documentElement.scrollWidth}px`);
              return problems;
            }"""
        )
        assert problems == [], f"{path}: {problems}"
    context.close()
