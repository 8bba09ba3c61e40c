"""The mobile popup in Chromium, on a storefront whose /apps/kinnekt/* requests go through a Shopify-like app proxy.

The test plays Shopify: it serves a tiny storefront at https://alpha.myshopify.com/ and, for every request to
/apps/kinnekt/<path>, forwards it to the live server's /proxy/<path> with the query Shopify adds (shop,
logged_in_customer_id, path_prefix, timestamp) signed with the app secret, plus X-Forwarded-For.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from kinnekt.models import Message, Subscriber
from kinnekt.queue import get_queue
from tests.conftest import make_shop
from tests.test_shopify_app_proxy import proxy_query

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]

STOREFRONT = "https://alpha.myshopify.com"
SHOPPER_IP = "203.0.113.9"
STORE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Alpha store</title></head>
<body><h1>Alpha store</h1><p>Our bread.</p>
<script>window.Shopify = {country: "US", routes: {root: "/"}};</script>
<script src="/apps/kinnekt/popup.js" defer></script>
</body></html>"""


@pytest.fixture
def storefront(app, page, live_server):
    """The page, with the storefront and Shopify's app proxy routed; returns the paths the proxy forwarded."""
    secret = app.config["SHOPIFY_API_SECRET"]
    forwarded = []

    def handle(route):
        url = urlsplit(route.request.url)
        if url.path == "/":
            return route.fulfill(status=200, content_type="text/html", body=STORE_PAGE)
        if not url.path.startswith("/apps/kinnekt/"):
            return route.fulfill(status=404, body="")
        path = url.path.removeprefix("/apps/kinnekt")
        query = proxy_query("alpha.myshopify.com", secret, extra=parse_qsl(url.query, keep_blank_values=True))
        forwarded.append((route.request.method, path))
        headers = {**route.request.headers, "x-forwarded-for": SHOPPER_IP}
        headers.pop("cookie", None)  # Shopify strips cookies
        response = route.fetch(url=f"{live_server}/proxy{path}?{query}", headers=headers)
        route.fulfill(response=response)

    page.route(f"{STOREFRONT}/**", handle)
    return forwarded


@pytest.mark.expected_http_error(422)  # the number that cannot be right is refused with 422 and its error
def test_shopper_signs_up_through_the_popup(page, db, storefront):
    shop = make_shop("alpha.myshopify.com", is_demo=True, popup_settings={
        "enabled": True, "headline": "Ten percent off your first loaf", "body": "Texts from the bakery.",
        "button": "Text me deals", "delay_seconds": 1})
    page.goto(f"{STOREFRONT}/")
    popup = page.get_by_role("dialog", name="Ten percent off your first loaf")
    expect(popup).to_be_visible()
    expect(popup).to_contain_text("Consent is not a condition of purchase")

    # a number that cannot be right: the error beside the field, nothing stored
    popup.get_by_label("Mobile number").fill("12")
    popup.get_by_role("checkbox").check()
    popup.get_by_role("button", name="Text me deals").click()
    expect(popup.locator('[data-kn-error="phone"]')).to_have_text("12 is too short to be a phone number.")
    expect(popup.get_by_label("Mobile number")).to_have_attribute("aria-invalid", "true")
    assert db.scalar(select(func.count()).select_from(Subscriber)) == 0

    # typed the way people do, without the country code: read in the storefront's country
    popup.get_by_label("Mobile number").fill("(650) 253-0000")
    popup.get_by_role("button", name="Text me deals").click()
    expect(popup.get_by_role("status")).to_contain_text("Check your phone")
    expect(popup.get_by_role("status")).to_contain_text("Reply Y")
    expect(popup.get_by_label("Mobile number")).to_be_hidden()

    assert get_queue().drain(20)
    db.expire_all()
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.shop_id, subscriber.phone, subscriber.status, subscriber.source, subscriber.consent_ip) == (
        shop.id, "+16502530000", "pending", "mobile_popup", SHOPPER_IP)
    assert db.scalar(select(Message.kind).where(Message.subscriber_id == subscriber.id)) == "confirmation"
    assert ("POST", "/popup") in storefront

    # joined: the next visit shows no popup
    page.reload()
    page.wait_for_timeout(1500)
    expect(page.locator("#kinnekt-popup")).to_have_count(0)


def test_closed_popup_stays_closed_and_an_off_popup_never_shows(page, db, storefront):
    shop = make_shop("alpha.myshopify.com", is_demo=True, popup_settings={"enabled": True, "delay_seconds": 0})
    page.goto(f"{STOREFRONT}/")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    page.reload()  # dismissed: not shown again for a week
    page.wait_for_timeout(1000)
    expect(page.locator("#kinnekt-popup")).to_have_count(0)

    page.evaluate("window.localStorage.clear()")
    shop.popup_settings = {"enabled": False}
    db.commit()
    page.reload()
    page.wait_for_timeout(1000)
    assert ("GET", "/popup") in storefront  # the script asked, and was told the popup is off
    expect(page.locator("#kinnekt-popup")).to_have_count(0)
    assert db.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_merchant_sees_the_preview_follow_the_form_and_saves(live_server, page, db, token_for):
    from kinnekt.models import Shop
    shop = make_shop("alpha.myshopify.com", popup_settings={})
    token = token_for(shop.domain, ttl=600)
    page.add_init_script("window.shopify = {idToken: async () => %r};" % token)
    page.goto(f"{live_server}/settings/?id_token={token}")
    preview = page.locator("#popup-preview")
    expect(preview).to_contain_text("Get 10% off your first order")
    page.locator("#popup-headline").fill("Fresh bread alerts!")
    page.locator("#popup-button").fill("Text me")
    expect(preview).to_contain_text("Fresh bread alerts!")
    expect(preview.get_by_role("button", name="Text me")).to_be_visible()
    db.expire_all()
    assert db.get(Shop, shop.id).popup_settings == {}  # the preview saves nothing
    page.locator("#popup-enabled").check()
    page.get_by_role("button", name="Save popup").click()
    expect(page.locator("#settings-popup")).to_contain_text("Saved")
    db.expire_all()
    saved = db.get(Shop, shop.id).popup_settings
    assert (saved["enabled"], saved["headline"], saved["button"]) == (True, "Fresh bread alerts!", "Text me")
