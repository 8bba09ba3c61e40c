"""A browsing rule built in the segment builder in Chromium: "viewed the blue shirt in the last 7 days and did not
order it", with the product picked from the catalog, the count following each choice, and the saved definition."""
from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session, utcnow
from kinnekt.models import Customer, LineItem, Order, Product, Segment, StorefrontEvent
from tests.factories import add, serial
from tests.test_browser_segments import redraw, row, settled
from tests.test_segments_web import person

pytestmark = pytest.mark.browser


def viewed(shop, sub, product, *, days_ago):
    add(StorefrontEvent(shop_id=shop.id, event_id=f"e{serial()}", name="product_viewed", client_id=f"b{sub.id}",
                        subscriber_id=sub.id, product_id=product, occurred_at=utcnow() - dt.timedelta(days=days_ago)))


@pytest.fixture
def browsers(shop, other_shop):
    """Ada looked at the blue shirt; Bob looked at it and bought it after; Cy looked at the red one; Dee at nothing;
    Old looked at the blue shirt weeks ago."""
    people = {name: person(shop, f"+1212555010{i}", name=name.title(), spent="10", orders=1, last_order_days=40)
              for i, name in enumerate(("ada", "bob", "cy", "dee", "old"), start=1)}
    add(Product(shop_id=shop.id, shopify_id=11, title="Blue shirt"),
        Product(shop_id=shop.id, shopify_id=12, title="Red shirt"),
        Product(shop_id=other_shop.id, shopify_id=13, title="Their shirt"))
    viewed(shop, people["ada"], 11, days_ago=2)
    viewed(shop, people["bob"], 11, days_ago=3)
    viewed(shop, people["cy"], 12, days_ago=1)
    viewed(shop, people["old"], 11, days_ago=20)
    bob = Session.get(Customer, people["bob"].customer_id)
    order = add(Order(shop_id=shop.id, shopify_id=serial(), customer_id=bob.id,
                      created_at=utcnow() - dt.timedelta(days=1)))
    add(LineItem(shop_id=shop.id, order_id=order.id, shopify_id=serial(), product_id=11, title="Blue shirt"))
    return people


def test_build_viewed_a_product_and_did_not_order_it(open_page, shop, browsers):
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("5")

    redraw(page, 0, "field", "event")
    redraw(page, 0, "event", "viewed_product")  # a browsing event: its product picker and "and not" appear
    expect(count).to_have_text("4")  # everyone who viewed a product
    search = row(page, 0).get_by_role("searchbox", name="Search products")
    search.fill("shirt")
    options = row(page, 0).locator(".picker__option")
    expect(options).to_have_text(["Blue shirt", "Red shirt"])  # never another shop's
    options.first.click()
    expect(row(page, 0).locator(".tag")).to_have_text(["Blue shirt"])
    expect(count).to_have_text("3")  # Ada, Bob and Old viewed the blue shirt

    redraw(page, 0, "within", "last_days")
    row(page, 0).locator("input[name$='-within-days']").fill("7")
    expect(count).to_have_text("2")  # Old's view is too old
    row(page, 0).locator("select[name$='-not-followed-by']").select_option("placed_order")
    expect(count).to_have_text("1")  # Bob ordered it after
    expect(page.locator("#segment-preview")).to_contain_text("+12125550101")
    settled(page)

    page.locator("#segment-name").fill("Looked at the blue shirt")
    page.get_by_role("button", name="Create segment").click()
    listed = page.locator("#segments-page tbody tr", has_text="Looked at the blue shirt")
    expect(listed).to_contain_text("Viewed a product: Blue shirt, and not ordered it after")
    saved = Session.scalars(select(Segment).where(Segment.name == "Looked at the blue shirt")).one()
    assert saved.definition == {"match": "all", "rules": [
        {"field": "event", "event": "viewed_product", "op": "performed", "within": {"last_days": 7}, "at_least": 1,
         "products": ["11"], "not_followed_by": "placed_order"}]}
