"""Picker search for the segment builder: GET /catalog/products?q= and /catalog/collections?q=.

Both answer the partial templates/catalog/_results.html (search-as-you-type; wire an input with
`hx-get="/catalog/products" hx-trigger="input changed delay:300ms, search" hx-target="#<target>"
hx-swap="outerHTML"`). Parameters: `q` (the typed text, optional: empty lists the first titles) and `target`
(the id of the results element, default `catalog-results`, letters, digits and dashes) and `page` (from 1; the
partial links the previous and next pages). Each result is a
<button data-catalog-kind data-catalog-id data-catalog-title>; `data-catalog-id` is Shopify's numeric id,
the form segment rules store (a product's variants are listed under it, but it is picked whole).
Results come from the synced catalog, or from the Admin API while it is empty.
"""
from __future__ import annotations

import re

from flask import g, render_template, request

from kinnekt.db import Session
from kinnekt.shopify import catalog_search
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import page_number

bp = merchant_blueprint("catalog", __name__, url_prefix="/catalog")

DEFAULT_TARGET = "catalog-results"
TARGET_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
LABELS = {"products": "products", "collections": "collections"}


def _results(kind: str):
    target = request.args.get("target", DEFAULT_TARGET)
    if not TARGET_RE.fullmatch(target):
        target = DEFAULT_TARGET
    query = catalog_search.clean_query(request.args.get("q"))
    result = catalog_search.search(Session, g.shop, kind, query, page=page_number(request.args.get("page")))
    return render_template("catalog/_results.html", result=result, kind=kind, q=query, target=target,
                           noun=LABELS[kind])


@bp.get("/products")
def products():
    """Products whose title or handle, or a variant's title or SKU, contains `q`, as the picker's result list
    (each with its price and variants)."""
    return _results("products")


@bp.get("/collections")
def collections():
    """Collections whose title or handle contains `q`, as the picker's result list."""
    return _results("collections")
