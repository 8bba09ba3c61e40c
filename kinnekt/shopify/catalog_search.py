"""Search-as-you-type over the synced catalog for the product and collection pickers, with an Admin API
fallback while the shop's catalog has not synced yet."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import case, exists, or_, select

from kinnekt import defaults
from kinnekt.models import Collection, Product, ProductVariant, Shop
from kinnekt.shopify.graphql import ShopifyError, client_for, gid_to_id
from kinnekt.shopify.values import money

log = logging.getLogger(__name__)

KINDS = ("products", "collections")

PRODUCTS_QUERY = """
query KinnektPickProducts($first: Int!, $query: String, $sortKey: ProductSortKeys) {
  products(first: $first, query: $query, sortKey: $sortKey) {
    nodes { id title handle status featuredMedia { preview { image { url } } }
            variants(first: 10) { nodes { title sku price } } variantsCount { count } }
  }
}
"""

COLLECTIONS_QUERY = """
query KinnektPickCollections($first: Int!, $query: String, $sortKey: CollectionSortKeys) {
  collections(first: $first, query: $query, sortKey: $sortKey) {
    nodes { id title handle }
  }
}
"""


@dataclass(frozen=True)
class Variant:
    """One variant of a pickable product, to show under it (picking stays per product)."""

    title: str
    sku: str | None = None
    price: Decimal | None = None


@dataclass(frozen=True)
class CatalogItem:
    """One pickable product or collection; `id` is Shopify's numeric id as digits (as segment rules store it).

    `variants` are the first VARIANTS_SHOWN of a product's variants, `variant_count` how many it has, and
    `price_range` the lowest and highest known price among them all (None when no price is known)."""

    id: str
    title: str
    detail: str | None = None
    image_url: str | None = None
    variants: tuple[Variant, ...] = ()
    variant_count: int = 0
    price_range: tuple[Decimal, Decimal] | None = None

    @property
    def variant_names(self) -> str:
        """The variants' titles, comma-separated, with "…" when more exist than are listed."""
        names = ", ".join(v.title for v in self.variants if v.title)
        return names + (", …" if self.variant_count > len(self.variants) else "")

    @property
    def single_default(self) -> bool:
        """True for a product whose one variant is Shopify's "Default Title" (a product without options)."""
        return self.variant_count == 1 and len(self.variants) == 1 and self.variants[0].title == "Default Title"


@dataclass
class SearchResult:
    """Matches, where they came from ("catalog", "shopify" or "none"), a problem to show, if any, and which page
    of the synced catalog's matches this is (`has_more`: a next page exists; the Admin API fallback has one page)."""

    items: list[CatalogItem] = field(default_factory=list)
    source: str = "catalog"
    error: str | None = None
    page: int = 1
    has_more: bool = False


def clean_query(text: str | None) -> str:
    """The search text trimmed to something sane (the picker sends whatever was typed)."""
    return " ".join((text or "").split())[:100]


def shopify_search(text: str) -> str | None:
    """Shopify search syntax for titles containing every word (special characters dropped), or None."""
    words = re.findall(r"[\w'-]+", text)
    words = [w.strip("'-") for w in words if w.strip("'-")]
    return " ".join(f"title:*{w}*" for w in words[:8]) or None


VARIANTS_SHOWN = 10
"""How many variants a product result lists (the count says how many it has)."""


def search(session, shop: Shop, kind: str, text: str | None, *, limit: int | None = None,
           page: int = 1) -> SearchResult:
    """Products or collections whose title (or handle) contains the text; titles starting with it first. A product
    also matches when one of its variants' title or SKU contains the text; results list each product's variants.

    `page` (from 1) pages through the synced catalog, `limit` results a page."""
    if kind not in KINDS:
        raise ValueError(f"unknown catalog kind {kind!r}")
    text = clean_query(text)
    limit = limit or defaults.CATALOG_SEARCH_LIMIT
    model = Product if kind == "products" else Collection
    if not session.scalar(select(exists().where(model.shop_id == shop.id))):
        return _from_shopify(shop, kind, text, limit)
    statement = select(model).where(model.shop_id == shop.id)
    if text:
        matches = [model.title.icontains(text, autoescape=True), model.handle.icontains(text, autoescape=True)]
        if kind == "products":
            matches.append(exists().where(
                ProductVariant.shop_id == shop.id, ProductVariant.product_id == Product.id,
                or_(ProductVariant.title.icontains(text, autoescape=True),
                    ProductVariant.sku.icontains(text, autoescape=True))))
        statement = statement.where(or_(*matches))
        starts = case((model.title.istartswith(text, autoescape=True), 0), else_=1)
        statement = statement.order_by(starts, model.title, model.id)
    else:
        statement = statement.order_by(model.title, model.id)
    page = max(1, page)
    rows = list(session.scalars(statement.limit(limit + 1).offset((page - 1) * limit)))
    rows, has_more = rows[:limit], len(rows) > limit
    variants = _variants_of(session, shop, [row.id for row in rows]) if kind == "products" else {}
    items = [_item(row, kind, variants.get(row.id, [])) for row in rows]
    return SearchResult(items, "catalog", page=page, has_more=has_more)


def _variants_of(session, shop: Shop, product_ids: list[int]) -> dict[int, list[ProductVariant]]:
    """The products' variants in their order, by product row id (one query for the page)."""
    found: dict[int, list[ProductVariant]] = {}
    if not product_ids:
        return found
    for variant in session.scalars(select(ProductVariant).where(
            ProductVariant.shop_id == shop.id, ProductVariant.product_id.in_(product_ids))
            .order_by(ProductVariant.product_id, ProductVariant.position, ProductVariant.id)):
        found.setdefault(variant.product_id, []).append(variant)
    return found


def _item(row, kind: str, variants: list[ProductVariant]) -> CatalogItem:
    if kind == "products":
        detail = row.handle if row.status == "active" else f"{row.handle or ''} · {row.status}".strip(" ·")
        shown = tuple(Variant(v.title, v.sku, v.price) for v in variants[:VARIANTS_SHOWN])
        return CatalogItem(str(row.shopify_id), row.title, detail or None, row.image_url, shown, len(variants),
                           _range(v.price for v in variants))
    return CatalogItem(str(row.shopify_id), row.title, row.handle)


def _range(prices) -> tuple[Decimal, Decimal] | None:
    known = [price for price in prices if price is not None]
    return (min(known), max(known)) if known else None


def _from_shopify(shop: Shop, kind: str, text: str, limit: int) -> SearchResult:
    """Ask the Admin API while nothing is synced (the demo store and unconnected shops get no fallback)."""
    if shop.is_demo or not shop.installed or shop.needs_reauth or not shop.access_token_enc:
        return SearchResult([], "none")
    query = shopify_search(text)
    variables = {"first": limit, "query": query, "sortKey": "RELEVANCE" if query else "TITLE"}
    try:
        data = client_for(shop).query(PRODUCTS_QUERY if kind == "products" else COLLECTIONS_QUERY, variables)
    except ShopifyError as exc:
        log.warning("catalog search fallback for %s failed: %s", shop.domain, exc)
        return SearchResult([], "shopify", error="Shopify could not be searched right now. Try again in a moment.")
    items = []
    for node in (data.get(kind) or {}).get("nodes") or []:
        shopify_id = gid_to_id(node.get("id"))
        if shopify_id is None:
            continue
        image = (((node.get("featuredMedia") or {}).get("preview") or {}).get("image") or {}).get("url")
        status = (node.get("status") or "").lower()
        detail = node.get("handle")
        if kind == "products" and status and status != "active":
            detail = f"{detail or ''} · {status}".strip(" ·")
        variants = ()
        if kind == "products":
            variants = tuple(Variant(str(v.get("title") or ""), v.get("sku") or None, money(v.get("price"), None))
                             for v in ((node.get("variants") or {}).get("nodes") or []) if isinstance(v, dict))
        count = (node.get("variantsCount") or {}).get("count") if kind == "products" else 0
        count = count if isinstance(count, int) and count >= len(variants) else len(variants)
        items.append(CatalogItem(str(shopify_id), node.get("title") or "", detail or None, image, variants, count,
                                 _range(v.price for v in variants)))
    return SearchResult(items, "shopify")
