"""Picker search: /catalog/products and /catalog/collections over the synced catalog, Admin API fallback."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest

from kinnekt.db import Session
from kinnekt.models import Collection, Product, ProductVariant
from kinnekt.shopify import catalog_search
from tests.fake_shopify import connect


def _products(shop, *titles, status="active"):
    for n, title in enumerate(titles, start=1):
        Session.add(Product(shop_id=shop.id, shopify_id=shop.id * 1000 + n, title=title,
                            handle=title.lower().replace(" ", "-"), status=status))
    Session.commit()


def _ids(html):
    return re.findall(r'data-catalog-id="(\d+)"', html)


def _titles(html):
    return re.findall(r'data-catalog-title="([^"]*)"', html)


def test_search_as_you_type_over_the_synced_catalog(client, auth, shop, other_shop):
    _products(shop, "Linen Shirt", "Shirt Dress", "Wool Socks", "Oxford shirt")
    _products(other_shop, "Shirt of another store")
    response = client.get("/catalog/products?q=shirt", headers=auth)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert re.search(r"<[a-z]+[^>]*>", html).group().startswith('<div id="catalog-results"')  # the partial's root
    assert _titles(html) == ["Shirt Dress", "Linen Shirt", "Oxford shirt"]  # starting with the text first
    assert all(i.isdigit() for i in _ids(html))
    assert "another store" not in html
    assert 'data-catalog-source="catalog"' in html


def test_empty_text_lists_the_first_titles(client, auth, shop):
    _products(shop, "Beta", "Alpha", "Gamma")
    assert _titles(client.get("/catalog/products", headers=auth).get_data(as_text=True)) == ["Alpha", "Beta", "Gamma"]


def test_results_come_in_pages_linked_to_each_other(client, auth, shop, monkeypatch):
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "CATALOG_SEARCH_LIMIT", 2)
    _products(shop, "Mug A", "Mug B", "Mug C", "Tee")
    first = client.get("/catalog/products?q=mug&target=picker-x", headers=auth).get_data(as_text=True)
    assert _titles(first) == ["Mug A", "Mug B"]
    assert "/catalog/products?q=mug&amp;target=picker-x&amp;page=2" in first and "Page 1" in first
    second = client.get("/catalog/products?q=mug&target=picker-x&page=2", headers=auth).get_data(as_text=True)
    assert _titles(second) == ["Mug C"] and "page=1" in second and "Page 2" in second
    assert re.search(r'<button[^>]*disabled[^>]*aria-label="Next page', second) or \
        re.search(r'disabled[^>]*>\s*<span>Next', second)
    # A page past the end, or not a number, is harmless.
    assert _titles(client.get("/catalog/products?q=mug&page=9", headers=auth).get_data(as_text=True)) == []
    not_a_number = client.get("/catalog/products?q=mug&page=x", headers=auth)
    assert _titles(not_a_number.get_data(as_text=True)) == ["Mug A", "Mug B"]
    # One page of results: no page links.
    assert "Page 1" not in client.get("/catalog/products?q=tee", headers=auth).get_data(as_text=True)


def _variants(shop, shopify_id, *variants):
    """Give the product with this Shopify id these (title, sku, price) variants, in order."""
    from sqlalchemy import select
    product = Session.scalar(select(Product).where(Product.shop_id == shop.id, Product.shopify_id == shopify_id))
    for n, (title, sku, price) in enumerate(variants, start=1):
        Session.add(ProductVariant(shop_id=shop.id, product_id=product.id, shopify_id=shopify_id * 100 + n,
                                   title=title, sku=sku, price=price, position=n))
    Session.commit()


def _variant_lines(html):
    return [" ".join(text.split()) for text in
            re.findall(r'class="catalog-results__variants[^"]*">(.*?)</span>', html, re.S)]


def test_results_list_each_products_variants_and_search_matches_title_or_sku(client, auth, shop, other_shop):
    _products(shop, "Field Jacket", "Canvas Tote", "Gift Card")
    _products(other_shop, "Their Jacket")
    _variants(shop, shop.id * 1000 + 1, ("S", "FJ-OLIVE-S", Decimal("120")), ("M", "FJ-OLIVE-M", Decimal("120")),
              ("XL", "FJ-OLIVE-XL", Decimal("135.5")))
    _variants(shop, shop.id * 1000 + 2, ("Default Title", "TOTE-1", Decimal("35")))
    _variants(other_shop, other_shop.id * 1000 + 1, ("Olive", "FJ-OLIVE-THEIRS", Decimal("1")))
    html = client.get("/catalog/products", headers=auth).get_data(as_text=True)
    assert _titles(html) == ["Canvas Tote", "Field Jacket", "Gift Card"]
    # A product without options shows its price alone; one without variants shows nothing more.
    assert _variant_lines(html) == ["$35.00", "$120.00–$135.50 · 3 variants: S, M, XL"]

    # A SKU or a variant title finds its product (case-insensitively), never another shop's.
    sku = client.get("/catalog/products?q=fj-olive-xl", headers=auth).get_data(as_text=True)
    assert _titles(sku) == ["Field Jacket"] and "Their" not in sku
    assert _titles(client.get("/catalog/products?q=olive", headers=auth).get_data(as_text=True)) == ["Field Jacket"]
    assert _titles(client.get("/catalog/products?q=tote-1", headers=auth).get_data(as_text=True)) == ["Canvas Tote"]

    result = catalog_search.search(Session, shop, "products", "xl")
    [jacket] = result.items
    assert [(v.title, v.sku, v.price) for v in jacket.variants] == [
        ("S", "FJ-OLIVE-S", Decimal("120")), ("M", "FJ-OLIVE-M", Decimal("120")),
        ("XL", "FJ-OLIVE-XL", Decimal("135.5"))]
    assert jacket.variant_count == 3 and jacket.price_range == (Decimal("120"), Decimal("135.5"))


def test_a_product_with_many_variants_lists_the_first_ones(client, auth, shop, monkeypatch):
    monkeypatch.setattr(catalog_search, "VARIANTS_SHOWN", 2)
    _products(shop, "Sock")
    _variants(shop, shop.id * 1000 + 1,
              ("Red", None, Decimal("5")), ("Blue", None, None), ("Green", None, Decimal("9")))
    html = client.get("/catalog/products?q=sock", headers=auth).get_data(as_text=True)
    assert _variant_lines(html) == ["$5.00–$9.00 · 3 variants: Red, Blue, …"]


def test_like_wildcards_in_the_text_are_literal(client, auth, shop):
    _products(shop, "100% Cotton Tee", "Cotton Tee")
    assert _titles(client.get("/catalog/products?q=100%25", headers=auth).get_data(as_text=True)) == ["100% Cotton Tee"]
    assert _titles(client.get("/catalog/products?q=_", headers=auth).get_data(as_text=True)) == []


def test_no_match_says_so(client, auth, shop):
    _products(shop, "Linen Shirt")
    html = client.get("/catalog/products?q=umbrella", headers=auth).get_data(as_text=True)
    assert "No products match" in html and _ids(html) == []


def test_draft_products_say_their_status(client, auth, shop):
    _products(shop, "Secret Jacket", status="draft")
    assert "secret-jacket · draft" in client.get("/catalog/products?q=jacket", headers=auth).get_data(as_text=True)


def test_collections(client, auth, shop):
    Session.add_all([Collection(shop_id=shop.id, shopify_id=501, title="Summer Sale", handle="summer-sale"),
                     Collection(shop_id=shop.id, shopify_id=502, title="Winter", handle="winter")])
    Session.commit()
    html = client.get("/catalog/collections?q=sale", headers=auth).get_data(as_text=True)
    assert _ids(html) == ["501"] and 'data-catalog-kind="collections"' in html


@pytest.mark.parametrize("target, expected", [("segment-products", "segment-products"),
                                              ('x" onclick="alert(1)', "catalog-results"),
                                              ("UPPER", "catalog-results")])
def test_the_results_element_id_is_the_target(client, auth, shop, target, expected):
    html = client.get("/catalog/products", query_string={"target": target}, headers=auth).get_data(as_text=True)
    assert f'<div id="{expected}"' in html and "onclick" not in html


def test_needs_a_session_token(client, db):
    assert client.get("/catalog/products?q=x", headers={"HX-Request": "true"}).status_code == 401


def test_falls_back_to_the_admin_api_while_nothing_is_synced(client, auth, shop, fake_shopify):
    connect(fake_shopify, shop)
    store = fake_shopify.shop(shop.domain)
    store.add_product("Linen Shirt", product_id=8123456789,
                      variants=[(1, "S", "LS-S", "49.50"), (2, "M", "LS-M", "49.50")])
    store.add_product("Wool Socks", product_id=8123456790)
    html = client.get("/catalog/products?q=shirt", headers=auth).get_data(as_text=True)
    assert _ids(html) == ["8123456789"] and "Searched in Shopify" in html
    assert _variant_lines(html) == ["$49.50 · 2 variants: S, M"]
    [call] = fake_shopify.calls("graphql:KinnektPickProducts")
    assert call["variables"] == {"first": 20, "query": "title:*shirt*", "sortKey": "RELEVANCE"}


def test_a_failing_fallback_shows_a_message(client, auth, shop, fake_shopify):
    connect(fake_shopify, shop)
    fake_shopify.fail_next("503", 10)
    response = client.get("/catalog/collections?q=sale", headers=auth)
    assert response.status_code == 200
    assert "Shopify could not be searched right now" in response.get_data(as_text=True)


def test_no_fallback_without_a_connection(client, auth, shop, fake_shopify):
    html = client.get("/catalog/products?q=shirt", headers=auth).get_data(as_text=True)
    assert "No products match" in html and fake_shopify.calls() == []


@pytest.mark.parametrize("typed, search", [
    ("shirt", "title:*shirt*"), ("linen shirt", "title:*linen* title:*shirt*"),
    ('a:b "c" (d) OR *', "title:*a* title:*b* title:*c* title:*d* title:*OR*"), ("", None), ("::", None),
])
def test_typed_text_becomes_safe_shopify_search(typed, search):
    assert catalog_search.shopify_search(typed) == search
