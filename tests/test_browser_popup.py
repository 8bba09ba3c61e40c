"""The mobile popup in Chromium, as the theme app extension's app embed, on a storefront whose /apps/kinnekt/*
requests go through a Shopify-like app proxy.

The test plays Shopify: it serves a storefront at https://alpha.myshopify.com/ whose pages end with the app embed
block's Liquid rendered with python-liquid (tests/theme_extension.py: the block's settings, the page's template,
the market's root), serves the extension's assets from Shopify's CDN address, and, for every request to
/apps/kinnekt/<path> (under the market's root), forwards it to the live server's /proxy/<path> with the query
Shopify adds (shop, logged_in_customer_id, path_prefix, timestamp) signed with the app secret, plus
X-Forwarded-For.
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
from tests.theme_extension import CDN, asset_file, render_embed, storefront_page

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]

STOREFRONT = "https://alpha.myshopify.com"
SHOPPER_IP = "203.0.113.9"
TEMPLATES = {"": "index", "products": "product", "collections": "collection", "cart": "cart", "pages": "page",
             "search": "search"}
"""First path segment of a storefront URL -> the template Shopify renders it with."""


@pytest.fixture
def embed():
    """The app embed as the merchant set it up in the theme editor (tests change it before loading a page)."""
    return {"settings": {"delay_seconds": 0}, "root_url": "/"}


@pytest.fixture
def storefront(app, page, live_server, embed):
    """The page, with the storefront, Shopify's CDN and Shopify's app proxy routed; returns the paths the proxy
    forwarded."""
    secret = app.config["SHOPIFY_API_SECRET"]
    forwarded = []

    def handle(route):
        url = urlsplit(route.request.url)
        root = embed["root_url"].rstrip("/")
        path = url.path.removeprefix(root) if root and url.path.startswith(root + "/") else url.path
        if path.startswith("/apps/kinnekt/"):
            proxied = path.removeprefix("/apps/kinnekt")
            query = proxy_query("alpha.myshopify.com", secret, extra=parse_qsl(url.query, keep_blank_values=True))
            forwarded.append((route.request.method, proxied))
            headers = {**route.request.headers, "x-forwarded-for": SHOPPER_IP}
            headers.pop("cookie", None)  # Shopify strips cookies
            return route.fulfill(response=route.fetch(url=f"{live_server}/proxy{proxied}?{query}", headers=headers))
        template = TEMPLATES.get(path.strip("/").split("/")[0])
        if template is None:
            return route.fulfill(status=404, body="")
        html = storefront_page(render_embed(settings=embed["settings"], template=template,
                                            root_url=embed["root_url"]))
        return route.fulfill(status=200, content_type="text/html", body=html)

    def cdn(route):
        found = asset_file(route.request.url)
        if found is None:
            return route.fulfill(status=404, body="")
        kind = "text/javascript" if found.suffix == ".js" else "text/css"
        return route.fulfill(status=200, content_type=kind, body=found.read_bytes())

    page.route(f"{STOREFRONT}/**", handle)
    page.route(f"{CDN}/**", cdn)
    return forwarded


@pytest.mark.expected_http_error(422)  # the number that cannot be right is refused with 422 and its error
def test_shopper_signs_up_through_the_app_embed(page, db, storefront, embed):
    shop = make_shop("alpha.myshopify.com", is_demo=True, popup_settings={
        "enabled": True, "headline": "Ten percent off your first loaf", "body": "Texts from the bakery.",
        "button": "Text me deals"})
    embed["settings"].update(delay_seconds=1, button_color="#0b6e4f", button_text_color="#fffdf5")
    page.goto(f"{STOREFRONT}/")
    popup = page.get_by_role("dialog", name="Ten percent off your first loaf")
    expect(popup).to_be_visible()
    expect(popup).to_contain_text("Consent is not a condition of purchase")
    # the block's colours, from the theme editor; the script came from Shopify's CDN
    expect(popup.get_by_role("button", name="Text me deals")).to_have_css("background-color", "rgb(11, 110, 79)")
    expect(popup.get_by_role("button", name="Text me deals")).to_have_css("color", "rgb(255, 253, 245)")
    assert page.evaluate("document.querySelector('script[data-proxy]').src").startswith(CDN)

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
    shop = make_shop("alpha.myshopify.com", is_demo=True, popup_settings={"enabled": True})
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


def test_pages_left_out_in_the_theme_editor_get_no_popup_and_markets_use_their_root(page, db, storefront, embed):
    make_shop("alpha.myshopify.com", is_demo=True, popup_settings={"enabled": True, "headline": "Join us"})
    embed["settings"].update(show_on_product=False)
    page.goto(f"{STOREFRONT}/products/sourdough")
    page.wait_for_timeout(800)
    expect(page.locator("script[data-proxy]")).to_have_count(0)
    expect(page.locator("#kinnekt-popup")).to_have_count(0)
    assert storefront == []  # nothing was even asked

    embed["root_url"] = "/fr"  # a market in a subfolder: the proxy is under it
    page.goto(f"{STOREFRONT}/fr/collections/bread")
    expect(page.get_by_role("dialog", name="Join us")).to_be_visible()
    assert page.evaluate("document.querySelector('script[data-proxy]').dataset.proxy") == "/fr/apps/kinnekt"
    assert storefront == [("GET", "/popup")]


def test_with_exit_intent_the_popup_waits_for_the_pointer_to_leave(page, db, storefront, embed):
    make_shop("alpha.myshopify.com", is_demo=True, popup_settings={"enabled": True, "headline": "Before you go"})
    embed["settings"].update(exit_intent=True)
    page.goto(f"{STOREFRONT}/")
    expect(page.locator("#kinnekt-popup")).to_have_count(1)  # fetched and ready, not shown
    page.wait_for_timeout(800)
    expect(page.get_by_role("dialog")).to_be_hidden()
    page.mouse.move(200, 200)
    page.mouse.move(200, 100)  # moving inside the page is not leaving
    expect(page.get_by_role("dialog")).to_be_hidden()
    # the pointer leaves through the top edge (towards the tabs): what Chromium sends is a mouseout to nowhere
    page.evaluate("document.documentElement.dispatchEvent(new MouseEvent('mouseout', "
                  "{bubbles: true, clientX: 200, clientY: 0, relatedTarget: null}))")
    expect(page.get_by_role("dialog", name="Before you go")).to_be_visible()


def test_merchant_sees_the_preview_follow_the_form_and_saves(app, live_server, page, db, token_for):
    from kinnekt.models import Shop
    shop = make_shop("alpha.myshopify.com", popup_settings={})
    token = token_for(shop.domain, ttl=600)
    page.add_init_script("window.shopify = {idToken: async () => %r};" % token)
    page.goto(f"{live_server}/settings/?id_token={token}")
    preview = page.locator("#popup-preview")
    expect(preview).to_contain_text("Get 10% off your first order")
    # the app embed's state arrives after the page (this shop is not connected to Shopify: it says so)
    expect(page.locator("#popup-embed")).to_contain_text("Could not check")
    expect(page.locator("#popup-embed-editor")).to_have_attribute(
        "href", "https://alpha.myshopify.com/admin/themes/current/editor?context=apps&activateAppId="
        f"{app.config['SHOPIFY_API_KEY']}/popup")
    page.locator("#popup-headline").fill("Fresh bread alerts!")
    page.locator("#popup-button").fill("Text me")
    expect(preview).to_contain_text("Fresh bread alerts!")
    expect(preview.get_by_role("button", name="Text me")).to_be_visible()
    db.expire_all()
    assert db.get(Shop, shop.id).popup_settings == {}  # the preview saves nothing
    page.locator("#popup-enabled").check()
    page.get_by_role("button", name="Save popup").click()
    # The badge, exactly: the card's help texts ("Saved as the Birthday profile property") contain "Saved" from the
    # start, so a contains-check passed before the save had answered and the read below could find the old row.
    expect(page.locator("#settings-popup").get_by_text("Saved", exact=True)).to_be_visible()
    db.rollback()  # end this session's read transaction: the live server committed the save in another connection
    saved = db.get(Shop, shop.id).popup_settings
    assert (saved["enabled"], saved["headline"], saved["button"]) == (True, "Fresh bread alerts!", "Text me")
