"""The web pixel in Shopify (webPixelCreate / webPixelUpdate through the fake, at install and from Settings) and
the Settings card: status, Connect / Update, the retention field."""
from __future__ import annotations

import json

import pytest

from kinnekt.db import Session
from kinnekt.models import Shop
from kinnekt.shopify import install
from kinnekt.shopify.tasks import connect_web_pixel
from kinnekt.tenancy import bind_shop
from tests.fake_shopify import connect

pytestmark = pytest.mark.usefixtures("settled_jobs")


def reread(shop_id: int) -> Shop:
    bind_shop(None)
    Session.expire_all()
    return Session.get(Shop, shop_id)


def test_the_job_creates_the_pixel_with_the_shops_key_and_endpoint_then_updates_it(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    assert connect_web_pixel(shop.id) == "created"
    shop = reread(shop.id)
    at_shopify = fake_shopify.shop(shop.domain).web_pixel
    assert shop.web_pixel_id == at_shopify["id"] and len(shop.pixel_key) >= 32
    assert json.loads(at_shopify["settings"]) == {"shopKey": shop.pixel_key,
                                                  "endpoint": app.config["SHOPIFY_APP_URL"].rstrip("/")
                                                  + "/pixel/events"}
    assert connect_web_pixel(shop.id) == "updated"
    assert [c["kind"] for c in fake_shopify.calls() if c["kind"].startswith("graphql:")] == [
        "graphql:KinnektWebPixelCreate", "graphql:KinnektWebPixelUpdate"]
    assert reread(shop.id).web_pixel_id == at_shopify["id"]


def test_a_pixel_removed_at_shopify_is_created_again(db, shop, fake_shopify):
    connect(fake_shopify, shop)
    connect_web_pixel(shop.id)
    fake_shopify.shop(shop.domain).web_pixel = None
    assert connect_web_pixel(shop.id) == "created"
    assert reread(shop.id).web_pixel_id == fake_shopify.shop(shop.domain).web_pixel["id"]


def test_a_pixel_we_lost_the_id_of_is_found_and_updated(db, shop, fake_shopify):
    connect(fake_shopify, shop)
    connect_web_pixel(shop.id)
    existing = fake_shopify.shop(shop.domain).web_pixel["id"]
    shop = reread(shop.id)
    shop.web_pixel_id, shop.pixel_key = None, None
    Session.commit()
    assert connect_web_pixel(shop.id) == "updated"
    shop = reread(shop.id)
    assert shop.web_pixel_id == existing
    assert json.loads(fake_shopify.shop(shop.domain).web_pixel["settings"])["shopKey"] == shop.pixel_key


def test_the_install_job_connects_the_pixel(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    install.complete_install(reread(shop.id))
    assert app.extensions["kinnekt_queue"].drain(30)
    assert fake_shopify.calls("graphql:KinnektWebPixelCreate")
    assert reread(shop.id).web_pixel_id


def test_the_demo_shop_has_no_pixel_to_connect(db, fake_shopify):
    from tests.conftest import make_shop
    demo = make_shop("demo.myshopify.com", is_demo=True)
    assert connect_web_pixel(demo.id) == "skipped" and fake_shopify.calls() == []


# ------------------------------------------------------------------------------------------------- the card

def test_the_card_shows_the_state_and_connects_the_pixel(app, client, auth, shop, fake_shopify):
    connect(fake_shopify, shop)
    Session.commit()  # the job runs in the queue's thread
    card = client.get("/settings/pixel/", headers=auth)
    assert card.status_code == 200
    html = card.get_data(as_text=True)
    assert 'id="settings-pixel"' in html and "Not connected" in html and "Connect pixel" in html
    response = client.post("/settings/pixel/connect", headers=auth)
    assert response.status_code == 200 and "Connecting the pixel" in response.headers.get("HX-Trigger", "")
    assert app.extensions["kinnekt_queue"].drain(30)
    assert reread(shop.id).web_pixel_id  # (and the test's session, which the requests share, sees it)
    html = client.get("/settings/pixel/?poll=1", headers=auth)
    assert html.status_code == 286  # the job is done: polling stops
    assert "Connected" in html.get_data(as_text=True) and "Update pixel" in html.get_data(as_text=True)
    assert reread(shop.id).web_pixel_id


def test_the_settings_page_includes_the_card(client, auth, shop):
    page = client.get("/settings/", headers=auth).get_data(as_text=True)
    assert 'id="settings-pixel"' in page and "/settings/pixel/" in page


def test_retention_is_saved_or_refused_beside_its_field(client, auth, shop, other_shop):
    bad = client.post("/settings/pixel/retention", data={"storefront_retention_days": "0"}, headers=auth)
    assert bad.status_code == 200 and "from 1 to 730" in bad.get_data(as_text=True)
    assert reread(shop.id).storefront_retention_days == 90
    good = client.post("/settings/pixel/retention", data={"storefront_retention_days": "45"}, headers=auth)
    assert good.status_code == 200 and 'value="45"' in good.get_data(as_text=True)
    assert reread(shop.id).storefront_retention_days == 45
    assert reread(other_shop.id).storefront_retention_days == 90


def test_the_card_needs_a_session_token(client, shop):
    assert client.get("/settings/pixel/", headers={"HX-Request": "true"}).status_code == 401
    assert client.post("/settings/pixel/retention", data={"storefront_retention_days": "5"}).status_code in (401, 302)
    assert reread(shop.id).storefront_retention_days == 90
