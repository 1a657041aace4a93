"""Issue 24's attacks that are web pages, in real Chromium: a page on another port of 127.0.0.1
(cookies ignore ports, so it can plant cookies the demo then receives) that

1. plants cookies of quoted backslashes and sends no-cors GETs, to burn the server's CPU
   (finding 1, CVE-2024-7592);
2. plants one cookie the stdlib parser dislikes, which moved the victim's browser onto the shared
   `demo` user and orphaned its session (finding 2).

And one thing the page itself must do: send an `event_id` with every click (finding 5), so that
a retried click counts once.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Request, expect
from test_browser import browser as chromium  # noqa: F401  (the module-scoped Chromium fixture)

pytestmark = pytest.mark.browser

USER_COOKIE = "rr_user"
CPU_PER_REQUEST_BOUND_S = 0.05


class BlankPage(http.server.BaseHTTPRequestHandler):
    """The attacker's site: an empty page on its own port, where the test runs the page's script."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site on 127.0.0.1</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def attacker_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def context(chromium: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    """A fresh browser profile: the victim's browser."""
    profile = chromium.new_context()
    yield profile
    profile.close()


def user_cookie(context: BrowserContext) -> str | None:
    return next((c["value"] for c in context.cookies() if c["name"] == USER_COOKIE), None)


def open_demo(context: BrowserContext, demo_url: str) -> str:
    """The victim opens the demo; returns the user the page shows, once it is ready."""
    page = context.new_page()
    page.goto(demo_url)
    expect(page.locator("#status")).to_contain_text("Ready")
    user = page.locator("#session-user").inner_text()
    page.close()
    return user


def run_on_attacker_page(context: BrowserContext, attacker_url: str, script: str, arg: object = None) -> object:
    page = context.new_page()
    page.goto(attacker_url)
    result = page.evaluate(script, arg)
    page.close()
    return result


PLANT_AND_FETCH = """async ({target, cookies, requests}) => {
  for (let i = 0; i < cookies; i++) {
    document.cookie = `x${i}="${"\\\\".repeat(4000)}"; path=/`;
  }
  const planted = document.cookie.length;
  for (let i = 0; i < requests; i++) {
    await fetch(target, {mode: "no-cors", credentials: "include"});
  }
  return planted;
}"""


def test_a_page_planting_cookies_of_backslashes_costs_the_server_no_cpu(
    context: BrowserContext, demo_url: str, attacker_url: str
) -> None:
    open_demo(context, demo_url)
    requests = 3
    started = time.process_time()  # the server runs in this process; Chromium does not
    planted = run_on_attacker_page(
        context, attacker_url, PLANT_AND_FETCH, {"target": demo_url + "/", "cookies": 6, "requests": requests}
    )
    spent = time.process_time() - started
    assert isinstance(planted, int) and planted > 20_000, "Chromium refused the cookies: the attack did not run"
    assert spent < requests * CPU_PER_REQUEST_BOUND_S, f"{spent:.2f} s of CPU for {requests} requests"


@pytest.mark.parametrize("planted", ["junk", "secure=1", "a[b]=1"])
def test_a_cookie_planted_by_another_page_leaves_the_victim_its_own_user(
    context: BrowserContext, demo_url: str, attacker_url: str, planted: str
) -> None:
    """Planted before the victim's first visit, the cookie is older than the victim's own, so
    Chromium sends it first: `planted; rr_user=...`, the order in which the stdlib parser gave up."""
    run_on_attacker_page(context, attacker_url, "(planted) => { document.cookie = planted + '; path=/'; }", planted)
    assert context.cookies(), "Chromium refused the planted cookie: the attack did not run"
    user = open_demo(context, demo_url)
    cookie = user_cookie(context)
    assert cookie and cookie.startswith(user + "."), f"the page acts as {user!r}, not as its cookie's user"
    assert open_demo(context, demo_url) == user
    assert user_cookie(context) == cookie, "the second visit replaced the victim's cookie"


def test_the_page_sends_a_fresh_event_id_with_every_click(
    context: BrowserContext, demo_url: str, catalog: dict, demo_app
) -> None:
    page = context.new_page()
    clicks: list[dict] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/click"):
            clicks.append(json.loads(request.post_data or "{}"))

    page.on("request", record)
    page.goto(demo_url)
    expect(page.locator("#status")).to_contain_text("Ready")
    for number, product in enumerate(catalog["products"][:2], start=1):
        page.locator(f'.product-card[data-id="{product["id"]}"] .card-main').click()
        expect(page.locator("#session-clicks")).to_have_text(str(number))
    user = page.locator("#session-user").inner_text()
    page.close()
    demo_app.recommender.reset_user(user)
    assert len(clicks) == 2
    event_ids = [click.get("event_id") for click in clicks]
    assert all(isinstance(event_id, str) and len(event_id) >= 16 for event_id in event_ids), event_ids
    assert event_ids[0] != event_ids[1]
