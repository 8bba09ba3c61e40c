"""Product and collection pickers of the segment builder in Chromium: Shopify's resource picker inside the
admin, the catalog picker dialog (images, variants, search, pages) in the demo."""
from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Collection, Product, ProductVariant, Segment
from tests.factories import add
from tests.test_segments_web import person

pytestmark = pytest.mark.browser

IMAGE = "/static/vendor/polaris-icons-9.3.1/InfoIcon.svg"
"""A product image the test server serves (Shopify's CDN in production)."""


@pytest.fixture
def catalog(shop, other_shop):
    """25 products of the shop (a page and a bit), two shirts with images (the blue one in three sizes), a
    collection; another shop's shirt."""
    person(shop, "+12125550101", name="Ada")
    blue = Product(shop_id=shop.id, shopify_id=11, title="Blue shirt", handle="blue-shirt", image_url=IMAGE)
    add(blue,
        Product(shop_id=shop.id, shopify_id=12, title="Red shirt", handle="red-shirt", image_url=IMAGE),
        *[Product(shop_id=shop.id, shopify_id=100 + n, title=f"Mug {n:02d}", handle=f"mug-{n:02d}") for n in range(23)],
        Product(shop_id=other_shop.id, shopify_id=13, title="Their shirt"),
        Collection(shop_id=shop.id, shopify_id=501, title="Summer sale", handle="summer-sale"))
    add(*[ProductVariant(shop_id=shop.id, product_id=blue.id, shopify_id=1100 + n, title=size, sku=f"BLUE-{size}",
                         price=Decimal(price), position=n)
          for n, (size, price) in enumerate((("S", "25"), ("M", "25"), ("L", "29.50")), start=1)])


def rule(page):
    return page.locator("#segment-builder .rule-row").first


def test_demo_picker_dialog_searches_pages_and_adds_products(open_page, shop, catalog):
    page = open_page("/segments/new")
    expect(page.locator("#segment-preview-count")).to_have_text("1")
    rule(page).locator("select[name$='-field']").select_option("ordered_product")
    rule(page).get_by_role("button", name="Browse products").click()

    dialog = page.locator("#catalog-picker")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Choose products")
    choices = dialog.locator("[data-catalog-id]")
    expect(choices).to_have_count(20)
    expect(choices.first).to_contain_text("Blue shirt")
    expect(choices.first.locator("img")).to_have_attribute("src", IMAGE)
    expect(choices.first).to_contain_text("blue-shirt")
    expect(choices.first.locator(".catalog-results__variants")).to_have_text("$25.00–$29.50 · 3 variants: S, M, L")
    dialog.get_by_role("button", name="Next page of products").click()
    expect(choices).to_have_count(5)
    expect(dialog).to_be_visible()  # paging keeps the dialog open
    expect(dialog.get_by_text("Page 2")).to_be_visible()
    dialog.get_by_role("button", name="Previous page of products").click()
    expect(choices).to_have_count(20)

    dialog.get_by_role("searchbox").fill("blue-l")  # a variant's SKU finds its product
    expect(choices).to_have_count(1)
    expect(choices.first).to_contain_text("Blue shirt")
    expect(choices.first).to_contain_text("3 variants: S, M, L")
    dialog.get_by_role("searchbox").fill("shirt")
    expect(choices).to_have_count(2)  # never another shop's
    expect(choices.nth(1).locator(".catalog-results__variants")).to_have_count(0)  # the red one has none
    expect(choices).to_contain_text(["Blue shirt", "Red shirt"])
    choices.nth(1).click()
    tags = rule(page).locator(".tag")
    expect(tags).to_have_text(["Red shirt"])
    expect(choices.nth(1)).to_have_attribute("aria-pressed", "true")
    choices.first.click()
    expect(tags).to_have_text(["Red shirt", "Blue shirt"])
    dialog.get_by_role("button", name="Done").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#segment-preview-count")).to_have_text("0")  # nobody bought them

    page.locator("#segment-name").fill("Shirt buyers")
    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#segments-page tbody tr", has_text="Shirt buyers")).to_have_count(1)
    saved = Session.scalars(select(Segment).where(Segment.name == "Shirt buyers")).one()
    assert saved.definition["rules"] == [{"field": "ordered_product", "op": "eq", "value": ["12", "11"]}]


def test_embedded_builder_uses_shopifys_resource_picker(embedded, open_page, shop, catalog):
    page = open_page("/segments/new")
    rule(page).locator("select[name$='-field']").select_option("ordered_product")
    browse = rule(page).get_by_role("button", name="Browse products")
    expect(browse).to_be_visible()
    page.evaluate("window.__appBridge.pickerSelection = ["
                  "{id: 'gid://shopify/Product/11', title: 'Blue shirt'}, {id: 'gid://shopify/Product/12'}]")
    browse.click()
    tags = rule(page).locator(".tag")
    expect(tags).to_have_text(["Blue shirt", "Red shirt"])  # titles from the shop's catalog
    expect(page.locator("#catalog-picker")).to_be_hidden()
    assert page.evaluate("window.__appBridge.pickers") == [{"type": "product", "multiple": True, "selectionIds": []}]

    # The picker opens on the rule's choice and its answer replaces it; a cancelled picker changes nothing.
    page.evaluate("window.__appBridge.pickerSelection = [{id: 'gid://shopify/Product/12'}]")
    browse.click()
    expect(tags).to_have_text(["Red shirt"])
    assert page.evaluate("window.__appBridge.pickers[1].selectionIds") == [
        {"id": "gid://shopify/Product/11"}, {"id": "gid://shopify/Product/12"}]
    page.evaluate("window.__appBridge.pickerSelection = undefined")
    browse.click()
    page.wait_for_function("() => window.__appBridge.pickers.length === 3")
    expect(tags).to_have_text(["Red shirt"])

    rule(page).locator("select[name$='-field']").select_option("ordered_collection")
    page.evaluate("window.__appBridge.pickerSelection = [{id: 'gid://shopify/Collection/501'}]")
    rule(page).get_by_role("button", name="Browse collections").click()
    expect(rule(page).locator(".tag")).to_have_text(["Summer sale"])
    assert page.evaluate("window.__appBridge.pickers[3].type") == "collection"
