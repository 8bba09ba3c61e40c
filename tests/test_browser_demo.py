"""The README's first command, for real: the demo server starts, and every nav page works in Chromium."""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from kinnekt.config import PROJECT_ROOT
from tests.conftest import settle

pytestmark = pytest.mark.browser
NAV_PAGES = ["Home", "Segments", "Campaigns", "Subscribers", "Keywords", "Settings", "Outbox"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """`flask --app app demo run` (what `make run` calls) on a fresh SQLite file and a free port."""
    port = _free_port()
    db_path = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SHOPIFY_API_SECRET")}
    env.update({"KINNEKT_DEMO": "1", "DATABASE_URL": f"sqlite:///{db_path}"})
    log_path = db_path.with_suffix(".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "demo", "run", "--port", str(port),
                                 "--customers", "600"], cwd=PROJECT_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("demo server exited:\n" + log_path.read_text()[-3000:])
        try:
            urllib.request.urlopen(url + "segments/", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("demo server did not answer in time:\n" + log_path.read_text()[-3000:])
    yield url, log_path
    proc.terminate()
    proc.wait(10)


def test_demo_prints_its_url_and_queue_mode(demo_server):
    url, log_path = demo_server
    output = log_path.read_text()
    assert f"Kinnekt demo is running at {url}" in output
    assert "background jobs run in this process" in output


def test_every_nav_page_without_console_errors(demo_server, page):
    url, _ = demo_server
    problems = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    page.on("response", lambda resp: problems.append(f"HTTP {resp.status}: {resp.url}") if resp.status >= 400 else None)
    page.goto(url)
    assert "Demo store" in page.content()
    # The demo lands on Home, its chart drawn from the seeded store.
    expect(page.locator("main h1").first).to_have_text("Home")
    expect(page.locator("#home-growth .home-chart canvas")).to_be_visible()
    for label in NAV_PAGES:
        page.locator("nav").get_by_role("link", name=label, exact=True).click()
        # Nav links are boosted (htmx swaps the page): wait for the new heading, not for the network, and for
        # htmx to be done (a click while the previous swap lands can hit a link that is being replaced).
        expect(page.locator("main h1").first).to_have_text(re.compile("^" + label))
        expect(page.locator("#loading-bar")).not_to_have_class(re.compile(r"\bhtmx-request\b"))
    page.locator("nav").get_by_role("link", name="Subscribers", exact=True).click()
    expect(page.locator("main h1").first).to_have_text(re.compile("^Subscribers"))
    expect(page.locator("main table tbody tr")).to_have_count(50)  # the seeded store fills a whole page
    assert problems == []


def _demo_db(log_path):
    import sqlite3
    return sqlite3.connect(log_path.with_suffix(".sqlite3"), timeout=30)


def test_a_newcomer_without_a_phone_signs_up_clicks_a_tracked_link_and_stops(demo_server, page):
    """The README's "Try it without a phone": JOIN and Y typed on the Outbox page, a campaign's tracked link
    clicked in the Outbox (a click), then STOP (opted out), in the demo as `make run` serves it."""
    url, log_path = demo_server
    phone = "+12125550187"
    with _demo_db(log_path) as db:  # so that the campaign goes out now, whatever the time in New York
        db.execute("UPDATE shops SET quiet_hours_enabled = 0")
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)

    page.goto(url)
    page.locator("nav").get_by_role("link", name="Outbox", exact=True).click()
    form = page.locator("#outbox-text")
    expect(form).to_contain_text("Try a keyword (JOIN, SUMMER, VIP)")
    form.get_by_label("From phone number").fill("+1 212 555 0187")
    form.get_by_label("Text", exact=True).fill("JOIN")
    form.get_by_role("button", name="Send text").click()
    expect(page.locator("#outbox-text-sent")).to_contain_text("Texted “JOIN” from +12125550187")
    table = page.locator("#outbox-table")
    expect(table).to_contain_text("Messages to +12125550187")
    expect(table).to_contain_text("Reply Y to confirm")  # double opt-in: the confirmation request
    expect(page).to_have_url(re.compile(r"/outbox/\?phone=%2B12125550187$"))

    page.locator("#outbox-text").get_by_label("Text", exact=True).fill("Y")
    page.locator("#outbox-text").get_by_role("button", name="Send text").click()
    expect(page.locator("#outbox-table")).to_contain_text("Welcome! You're signed up")

    page.locator("nav").get_by_role("link", name="Campaigns", exact=True).click()
    page.get_by_role("link", name="Create campaign").click()
    page.locator("#campaign-name").fill("New arrivals")
    page.locator("#campaign-body").fill(
        "Northwind Outfitters: new arrivals are in https://northwind-outfitters.com/collections/new-arrivals")
    page.locator("#campaign-include label", has_text="Keyword: JOIN").get_by_role("checkbox").check()
    page.get_by_label("Send now").check()
    page.get_by_role("button", name="Send now", exact=True).click()  # the button says what it will do
    expect(page.locator("#campaign-status")).to_have_text("Completed", timeout=60_000)
    settle(page)  # the campaign page's chart script and styles are in before the page is left

    page.goto(f"{url}outbox/?phone=%2B12125550187")
    link = page.locator("#outbox-table a", has_text="/r/")
    expect(link).to_have_count(1)
    expect(link).to_have_attribute("href", re.compile(rf"^{re.escape(url)}r/\w+$"))
    page.context.route("https://northwind-outfitters.com/**",
                       lambda route: route.fulfill(status=200, content_type="text/html", body="<h1>New arrivals</h1>"))
    with page.context.expect_page() as opened:
        link.click()
    store = opened.value
    expect(store).to_have_url(re.compile(r"^https://northwind-outfitters\.com/collections/new-arrivals\?.*utm_source=sms"))
    store.close()
    with _demo_db(log_path) as db:
        clicks_count, status = db.execute("SELECT clicks_count, status FROM subscribers WHERE phone = ?",
                                          (phone,)).fetchone()
        clicks = db.execute("SELECT count(*) FROM clicks JOIN subscribers s ON s.id = clicks.subscriber_id "
                            "WHERE s.phone = ?", (phone,)).fetchone()[0]
    assert (clicks_count, clicks, status) == (1, 1, "subscribed")

    page.locator("#outbox-text").get_by_label("From phone number").fill(phone)
    page.locator("#outbox-text").get_by_label("Text", exact=True).fill("STOP")
    page.locator("#outbox-text").get_by_role("button", name="Send text").click()
    expect(page.locator("#outbox-table")).to_contain_text("You are unsubscribed and will get no more messages")
    with _demo_db(log_path) as db:
        assert db.execute("SELECT status FROM subscribers WHERE phone = ?", (phone,)).fetchone()[0] == "unsubscribed"
    assert problems == []


def _demo_pages(log_path) -> list[str]:
    """Every page of the demo a merchant can open: the navigation, each "new" form, and one of each detail page
    (the seeded store's first segment, campaign, subscriber, keyword, flow; a manual segment's editor)."""
    with _demo_db(log_path) as db:
        first = {table: db.execute(f"SELECT min(id) FROM {table}").fetchone()[0]
                 for table in ("segments", "campaigns", "subscribers", "keywords", "flows")}
        manual = db.execute("SELECT min(id) FROM segments WHERE kind = 'manual'").fetchone()[0]
    pages = ["/", "/segments/", "/segments/new", "/segments/lists/", "/campaigns/", "/campaigns/new",
             "/subscribers/", "/subscribers/new", "/subscribers/import", "/keywords/", "/keywords/new",
             "/flows/", "/flows/new", "/settings/", "/outbox/"]
    details = {"segments": "/segments/{}", "campaigns": "/campaigns/{}", "subscribers": "/subscribers/{}",
               "keywords": "/keywords/{}", "flows": "/flows/{}"}
    pages += [details[table].format(row_id) for table, row_id in first.items() if row_id is not None]
    if manual is not None:
        pages.append(f"/segments/{manual}/edit")
    return pages


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_every_page_at_desktop_and_phone_sizes(demo_server, page, width, height):
    """Each page opens with its heading, no browser error (the suite's fixture fails the test on any), and no
    sideways scrolling of the page itself (wide tables scroll inside their own box)."""
    url, log_path = demo_server
    page.set_viewport_size({"width": width, "height": height})
    pages = _demo_pages(log_path)
    assert len(pages) >= 19
    for path in pages:
        page.goto(url.rstrip("/") + path)
        expect(page.locator("main h1").first, path).to_be_visible()
        settle(page)  # its lazy cards are in (measured with them; leaving earlier would abort their requests)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at {width}x{height}"
