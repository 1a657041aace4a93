"""The demo page in a real browser: Debian's headless Chromium driven by Playwright, against the
in-process demo server. It walks the flows a person follows (search with filters, click, watch the
session panel, re-embed a product, reset; the For you feed turning to what was clicked, More like
this, Not interested), checks that hostile product text stays text, that the page runs without
errors or Content-Security-Policy violations, and that it fits a phone screen.

Screenshots land in test-output/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Playwright evaluates this in every page before the page's own script, whatever the page's CSP.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`);
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} not found: the browser test needs Debian's chromium "
            "(sudo apt-get install chromium, or run ./scripts/ensure-chromium as root)"
        )
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """A page and everything it did wrong: console errors, uncaught exceptions, dialogs."""

    page: Page
    context: BrowserContext
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def user_id(self) -> str | None:
        """The user id in the page's cookie, which is either the bare id or `<id>.<signature>`."""
        value = next((c["value"] for c in self.context.cookies() if c["name"] == "rr_user"), None)
        if value is None:
            return None
        user_id, dot, _signature = value.rpartition(".")
        return user_id if dot else value

    def assert_clean(self) -> None:
        violations = self.page.evaluate("window.__cspViolations")
        assert violations == [], violations
        assert self.console_errors == []
        assert self.page_errors == []
        assert self.dialogs == [], "a dialog opened: page data ran as code"


@pytest.fixture
def open_page(browser: Browser, demo_url: str, demo_app) -> Iterator[Callable[[ViewportSize], Watched]]:
    """Opens the demo in a fresh browser profile (so a fresh user) at a given viewport, with the page
    ready; closes it and forgets its user afterwards."""
    opened: list[Watched] = []

    def open_at(viewport: ViewportSize) -> Watched:
        context = browser.new_context(viewport=viewport)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        watched = Watched(context.new_page(), context)
        opened.append(watched)
        watched.page.on("console", watched.on_console)
        watched.page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
        watched.page.on("dialog", watched.on_dialog)
        watched.page.goto(demo_url)
        # A locator, not wait_for_function: the page's CSP rightly refuses the eval that one needs.
        expect(watched.page.locator("#category option").nth(1)).to_be_attached()
        expect(watched.page.locator("#status")).to_contain_text("Ready")
        return watched

    yield open_at
    for watched in opened:
        user_id = watched.user_id()
        watched.context.close()
        if user_id:
            demo_app.recommender.reset_user(user_id)


@pytest.fixture
def restore_vector(demo_app, catalog: dict) -> Iterator[list[str]]:
    """Ids of products the test re-embeds; they get their catalogue vectors back afterwards."""
    changed: list[str] = []
    yield changed
    demo_app.recommender.index_products([p for p in catalog["products"] if p["id"] in changed])


@pytest.fixture
def hostile_product(demo_app, catalog: dict) -> Iterator[dict[str, Any]]:
    """A product whose every text is markup, cheaper than anything in the catalogue so a price
    filter isolates it. Afterwards the catalogue is re-seeded: deleting the hash alone would leave
    its brand in FT.TAGVALS (so in /state's brands) until Redis's garbage collector runs."""
    product = {
        "id": f"xss-{secrets.token_hex(4)}",
        "name": "<img src=x onerror=alert(1)>",
        "description": '<script>alert("desc")</script> "><img src=y onerror=alert(2)> looks dangerous, is text',
        "category": "outerwear",
        "brand": "<b>Evil</b> & Co",
        "price": 0.5,
        "rating": 4.0,
        "in_stock": True,
        "embedding_b64": catalog["products"][0]["embedding_b64"],
    }
    assert product["price"] < min(p["price"] for p in catalog["products"])
    demo_app.recommender.index_products([product])
    yield product
    demo_app.seed()


def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def test_search_click_refresh_and_reset(
    open_page: Callable[[ViewportSize], Watched], catalog: dict, restore_vector: list[str]
) -> None:
    watched = open_page(DESKTOP)
    page = watched.page
    expect(page.locator("#session-user")).to_have_text(watched.user_id() or "(no cookie)")
    expect(page.locator("#index-num-docs")).to_have_text(str(len(catalog["products"])))
    expect(page.locator(".product-card")).to_have_count(len(catalog["products"]))

    page.fill("#query", "warm insulated jacket for winter")
    page.select_option("#category", "outerwear")
    page.check("#in-stock-only")
    page.click("#search-btn")
    rows = page.locator("#results tr.result-row")
    expect(rows.first).to_be_visible()
    details = rows.locator(".cell-details").all_inner_texts()
    assert details and all(text.split(" · ")[1] == "outerwear" for text in details)
    expect(rows.locator(".badge-oos")).to_have_count(0)

    name = rows.first.locator(".name").inner_text()
    rows.first.locator(".click-btn").click()
    expect(page.locator("#session-clicks")).to_have_text("1")
    expect(page.locator("#affinities .bar-label")).to_have_text(["outerwear"])
    expect(page.locator("#affinities .bar-value")).to_have_text(["1.0"])
    expect(page.locator("#recent-clicks li")).to_have_count(1)
    expect(page.locator("#recent-clicks")).to_contain_text(name)
    expect(page.locator("#session-vec")).to_have_text(f"{catalog['dim']}-d vector")
    expect(page.locator("#status")).to_contain_text(f"Clicked {name}")

    target = next(p for p in catalog["products"] if p["category"] == "bags")["id"]
    restore_vector.append(target)
    page.select_option("#refresh-product", target)
    page.fill("#refresh-text", "heavy duty arctic expedition parka\nwith a fur-lined hood")
    page.click("#refresh-btn")
    expect(page.locator("#refresh-result")).to_have_text(re.compile(rf"Re-embedded {target} in [\d.]+ ms"))

    page.click("#reset-user-btn")
    expect(page.locator("#session-clicks")).to_have_text("0")
    expect(page.locator("#recent-clicks")).to_have_text("Nothing clicked yet.")
    expect(page.locator("#affinities")).to_have_text("No clicks yet.")
    screenshot(page, "desktop.png")
    watched.assert_clean()


def test_an_understood_brand_is_a_chip_removed_with_one_click(open_page: Callable[[ViewportSize], Watched]) -> None:
    watched = open_page(DESKTOP)
    page = watched.page
    page.fill("#query", "northpeak jacket under 300")
    page.click("#search-btn")
    chips = page.locator("#understood .chip[data-facet]")
    expect(chips).to_have_count(2)
    expect(page.locator("#understood .chip[data-facet=brand]")).to_have_text("Brand: Northpeak ×")
    details = page.locator("#results tr.result-row .cell-details").all_inner_texts()
    assert details and all(text.split(" · ")[0] == "Northpeak" for text in details)
    page.locator("#understood .chip[data-facet=brand]").click()
    expect(page.locator("#query")).to_have_value("jacket under 300")
    expect(page.locator("#understood .chip[data-facet]")).to_have_count(1)
    expect(page.locator("#understood .chip[data-facet=max_price]")).to_be_visible()
    watched.assert_clean()


def result_categories(page: Page) -> list[str]:
    """The category of every row in the results list ("brand · category · price · rating")."""
    details = page.locator("#results tr.result-row .cell-details").all_inner_texts()
    return [text.split(" · ")[1] for text in details]


def test_feed_follows_clicks_more_like_this_and_not_interested(
    open_page: Callable[[ViewportSize], Watched], catalog: dict
) -> None:
    watched = open_page(DESKTOP)
    page = watched.page
    feed = page.locator("#foryou .feed-card")
    expect(feed).to_have_count(10)
    expect(page.locator("#foryou-source")).to_have_text(re.compile(r"^(trending|top rated)$"))
    expect(page.locator("#session-fades")).to_have_text("no session yet")

    footwear = [p["id"] for p in catalog["products"] if p["category"] == "footwear"][:3]
    for clicks, product_id in enumerate(footwear, start=1):
        page.locator(f'.product-card[data-id="{product_id}"] .card-main').click()
        expect(page.locator("#session-clicks")).to_have_text(str(clicks))
    # The feed made after the third click leaves out the three clicked products.
    expect(page.locator("#foryou-meta")).to_contain_text(re.compile(r"\b[3-9] seen left out"))
    expect(page.locator("#foryou-source")).to_have_text("from your session")
    expect(feed).to_have_count(10)
    categories = feed.locator(".card-category").all_inner_texts()
    assert sum(category == "footwear" for category in categories) >= 7, categories
    assert not {card.get_attribute("data-id") for card in feed.all()} & set(footwear)
    expect(feed.first.locator(".why-session")).to_have_text(re.compile(r"^session \d+%$"))
    expect(page.locator("#session-fades")).to_contain_text(re.compile(r"fades in (\d+ min|under a minute)"))
    expect(page.locator("#trending .trend-item").first).to_be_visible()

    parka = next(p for p in catalog["products"] if p["id"] == "p001")
    page.locator('.product-card[data-id="p001"] .more-btn').click()
    expect(page.locator("#results-heading")).to_have_text(f"More like {parka['name']}")
    rows = page.locator("#results tr.result-row")
    expect(rows).to_have_count(10)
    categories = result_categories(page)
    assert sum(category == "outerwear" for category in categories) >= 6, categories
    expect(page.locator('#results tr.result-row[data-id="p001"]')).to_have_count(0)
    expect(rows.locator(".why-category").first).to_have_text(re.compile(r"^same category −\d\.\d\d$"))
    page.click("#results-back")
    expect(page.locator("#results-heading")).to_have_text("Results")
    expect(page.locator("#results-back")).to_be_hidden()

    page.fill("#query", "warm down parka for winter")
    page.click("#search-btn")
    expect(rows).to_have_count(10)
    dismissed_id = rows.first.get_attribute("data-id")
    dismissed_name = rows.first.locator(".name").inner_text()
    rows.first.locator(".dismiss-btn").click()
    expect(page.locator(f'#results tr.result-row[data-id="{dismissed_id}"]')).to_have_count(0)
    expect(page.locator("#dismissed")).to_contain_text(dismissed_name)
    expect(page.locator(f'.product-card[data-id="{dismissed_id}"]')).to_have_class(re.compile(r"\bis-dismissed\b"))
    # A new search for the product by its own name finds it again, greyed and marked down among
    # the first results, saying it was dismissed; the feed still leaves it out.
    page.fill("#query", dismissed_name)
    page.click("#search-btn")
    expect(page.locator("#status")).to_contain_text("Found")
    expect(rows.first).to_be_visible()
    again = page.locator(f'#results tr.result-row[data-id="{dismissed_id}"]')
    expect(again).to_have_count(1)
    expect(again).to_have_class(re.compile(r"\bis-dismissed\b"))
    expect(again.locator(".why-dismissed")).to_have_text("you dismissed this")
    expect(page.locator(f'#foryou .feed-card[data-id="{dismissed_id}"]')).to_have_count(0)

    # From the keyboard: the dismissed card goes, and focus lands on the card that took its place.
    gone = feed.first.get_attribute("data-id")
    feed.first.locator(".dismiss-btn").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f'#foryou .feed-card[data-id="{gone}"]')).to_have_count(0)
    expect(page.locator("#foryou .feed-card").first.locator(".dismiss-btn")).to_be_focused()

    page.locator("#diversity").fill("0.5")
    expect(page.locator("#diversity-value")).to_have_text("0.5")
    expect(feed.locator(".why-diversity").first).to_have_text(re.compile(r"^diversity −\d\.\d\d$"))
    screenshot(page, "feed.png")
    watched.assert_clean()


def test_product_text_is_never_markup(
    open_page: Callable[[ViewportSize], Watched], hostile_product: dict[str, Any]
) -> None:
    watched = open_page(DESKTOP)
    page = watched.page
    name, product_id = hostile_product["name"], hostile_product["id"]

    card = page.locator(f'.product-card[data-id="{product_id}"]')
    expect(card.locator(".card-name")).to_have_text(name)
    expect(card.locator(".card-sub")).to_contain_text(hostile_product["brand"])
    expect(page.locator("#refresh-product option", has_text=name)).to_have_count(1)
    assert "<b>evil</b> & co" in [b.lower() for b in page.locator("#brand option").all_inner_texts()]

    page.fill("#max-price", "1")
    page.click("#search-btn")
    row = page.locator("#results tr.result-row")
    expect(row).to_have_count(1)
    expect(row.locator(".name")).to_have_text(name)
    expect(row.locator(".desc")).to_have_text(hostile_product["description"])
    row.locator(".click-btn").click()
    expect(page.locator("#recent-clicks")).to_contain_text(name)
    expect(page.locator("#status")).to_contain_text(name)
    page.fill("#max-price", "")  # "more like this" takes the search filters too
    card.locator(".more-btn").click()
    expect(page.locator("#results-heading")).to_have_text(f"More like {name}")
    row = page.locator("#results tr.result-row").first
    expect(row.locator(".dismiss-btn")).to_have_attribute("aria-label", re.compile("^Not interested in "))

    # The page itself has no images: any <img> would be product text parsed as HTML.
    expect(page.locator("img")).to_have_count(0)
    expect(page.locator("script")).to_have_count(1)
    watched.assert_clean()


def test_the_page_fits_a_phone_screen(open_page: Callable[[ViewportSize], Watched]) -> None:
    watched = open_page(PHONE)
    page = watched.page
    page.click("#search-btn")
    expect(page.locator("#results tr.result-row").first).to_be_visible()
    page.locator(".product-card .card-main").first.click()
    expect(page.locator("#session-clicks")).to_have_text("1")
    expect(page.locator("#foryou-source")).to_have_text("from your session")
    expect(page.locator("#foryou .feed-card").first).to_be_visible()
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= PHONE["width"] + 1, f"the page scrolls sideways: {scroll_width}px wide"
    screenshot(page, "narrow.png")
    watched.assert_clean()


def test_the_page_never_offers_input_the_server_refuses(open_page: Callable[[ViewportSize], Watched]) -> None:
    """The server takes at most 1000 characters per text field; the page's own limits must fit."""
    page = open_page(DESKTOP).page
    for selector in ("#query", "#refresh-text"):
        limit = page.eval_on_selector(selector, "node => node.maxLength")
        assert 0 < limit <= 1000, (selector, limit)
