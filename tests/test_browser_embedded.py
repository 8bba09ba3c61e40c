"""Embedded mode in Chromium: pages need a session token, and every htmx request carries one."""
import re

import pytest
from playwright.sync_api import expect

from kinnekt.db import utcnow
from kinnekt.models import Subscriber

pytestmark = pytest.mark.browser

FAKE_APP_BRIDGE = """
window.__tokenCalls = 0;
window.shopify = {idToken: async () => { window.__tokenCalls += 1; return %r; }};
"""


def _subscribers(db, shop, other_shop):
    rows = [Subscriber(shop_id=shop.id, phone=f"+1212555{n:04d}", first_name=name, status="subscribed",
                       source="manual", subscribed_at=utcnow())
            for n, name in enumerate(["Ada", "Grace", "Linus", "Barbara"])]
    rows.append(Subscriber(shop_id=other_shop.id, phone="+12125559999", first_name="Mallory", status="subscribed",
                           source="manual", subscribed_at=utcnow()))
    db.add_all(rows)
    db.commit()


def test_htmx_requests_carry_the_session_token(live_server, page, db, shop, other_shop, token_for):
    _subscribers(db, shop, other_shop)
    token = token_for(shop.domain, ttl=600)
    page.add_init_script(FAKE_APP_BRIDGE % token)
    sent = []
    page.on("request", lambda req: sent.append((req.url, req.headers.get("authorization")))
            if "/subscribers/" in req.url else None)
    page.goto(f"{live_server}/subscribers/?shop={shop.domain}&id_token={token}")
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("main")).not_to_contain_text("Mallory")  # another shop's subscriber

    page.locator("#subscriber-search").fill("grace")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Grace")
    htmx_requests = [(url, auth) for url, auth in sent if "q=grace" in url]
    assert htmx_requests and all(auth == f"Bearer {token}" for _, auth in htmx_requests)
    assert page.evaluate("window.__tokenCalls") >= 1

    page.locator("nav").get_by_role("link", name="Keywords", exact=True).click()  # boosted navigation
    expect(page.locator("main h1").first).to_have_text(re.compile("^Keywords"))


@pytest.mark.expected_http_error(401)  # the expired token's request, which the page retries
def test_expired_token_is_retried_once_with_a_fresh_one(live_server, page, db, shop, other_shop, token_for):
    _subscribers(db, shop, other_shop)
    good = token_for(shop.domain, ttl=600)
    expired = token_for(shop.domain, now=1_000_000, ttl=60)
    page.add_init_script("""
        window.__tokens = [%r, %r];
        window.shopify = {
            idToken: async () => window.__tokens.length > 1 ? window.__tokens.shift() : window.__tokens[0],
        };
    """ % (expired, good))
    statuses = []
    page.on("response", lambda resp: statuses.append(resp.status) if "q=ada" in resp.url else None)
    page.goto(f"{live_server}/subscribers/?id_token={good}")
    page.locator("#subscriber-search").fill("ada")
    expect(page.locator("main table tbody tr")).to_have_count(1)
    assert statuses == [401, 200]
    expect(page.locator("#global-error")).to_be_empty()


def test_document_request_without_token_goes_to_the_bounce_page(live_server, page, db, shop):
    page.goto(f"{live_server}/campaigns/?shop={shop.domain}")
    assert page.url.startswith(f"{live_server}/auth/session-token-bounce?")
    assert page.locator("body").get_attribute("data-reload") == f"/campaigns/?shop={shop.domain}"
