"""What a definition refers to in the shop: the titles of the products, collections, segments and lists its rules
name, the check of a definition against the contract and the shop's catalog (what the builder and the JSON API
run before saving or previewing), and the catalog search behind the pickers."""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from typing import Any, Iterable

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Collection, Product, Segment, ShopifySegment, StaticList
from kinnekt.numbers import record_id
from kinnekt.segments.rules import Definition, DefinitionError, iter_rules, validate

PICKER_LIMIT = 20
"""Products or collections one picker search returns."""


@dataclass
class Names:
    """Titles of the things rules refer to by id, for rows and summaries."""

    products: dict[str, str] = dataclass_field(default_factory=dict)
    collections: dict[str, str] = dataclass_field(default_factory=dict)
    segments: dict[int, str] = dataclass_field(default_factory=dict)
    lists: dict[int, str] = dataclass_field(default_factory=dict)
    shopify_segments: dict[str, tuple[str, Any]] = dataclass_field(default_factory=dict)
    """Shopify segment id (digits) -> (name, when its members were last read or None)."""


def _ids(values: Iterable[Any]) -> list[int]:
    out = []
    for value in values:
        number = record_id(str(value))
        if number is not None:
            out.append(number)
    return out


def _referenced(definitions: Iterable[Any]) -> dict[str, set]:
    found: dict[str, set] = {"product": set(), "collection": set(), "segment": set(), "list": set(),
                             "shopify_segment": set()}
    for definition in definitions:
        for rule in iter_rules(definition):
            field, value = rule.get("field"), rule.get("value")
            values = value if isinstance(value, list) else [value]
            if field == "ordered_product" or (field == "line_items" and rule.get("attribute") == "product_id"):
                found["product"].update(_ids(values))
            elif field == "ordered_collection":
                found["collection"].update(_ids(values))
            elif field in ("segment", "list"):
                found[field].update(_ids(values))
            elif field == "shopify_segment":
                found[field].update(_ids(str(v).rsplit("/", 1)[-1] for v in values))
            if field == "event":
                for key, kind in (("products", "product"), ("collections", "collection")):
                    if isinstance(rule.get(key), list):
                        found[kind].update(_ids(rule[key]))
    return found


def load_names(session: OrmSession, shop_id: int, definitions: Iterable[Any]) -> Names:
    """Titles of the shop's products, collections, segments and lists that the definitions name."""
    found = _referenced(definitions)
    names = Names()
    if found["product"]:
        names.products = {str(i): t for i, t in session.execute(
            select(Product.shopify_id, Product.title).where(Product.shop_id == shop_id,
                                                           Product.shopify_id.in_(found["product"])))}
    if found["collection"]:
        names.collections = {str(i): t for i, t in session.execute(
            select(Collection.shopify_id, Collection.title).where(Collection.shop_id == shop_id,
                                                                 Collection.shopify_id.in_(found["collection"])))}
    if found["segment"]:
        names.segments = dict(session.execute(select(Segment.id, Segment.name).where(
            Segment.shop_id == shop_id, Segment.id.in_(found["segment"]))).all())
    if found["list"]:
        names.lists = dict(session.execute(select(StaticList.id, StaticList.name).where(
            StaticList.shop_id == shop_id, StaticList.id.in_(found["list"]))).all())
    if found["shopify_segment"]:
        names.shopify_segments = {str(i): (n, at) for i, n, at in session.execute(
            select(ShopifySegment.shopify_id, ShopifySegment.name, ShopifySegment.refreshed_at).where(
                ShopifySegment.shop_id == shop_id, ShopifySegment.shopify_id.in_(found["shopify_segment"]),
                ShopifySegment.gone_at.is_(None)))}
    return names


def catalog_errors(session: OrmSession, shop_id: int, definition: Any) -> list[dict[str, str]]:
    """Errors for product and collection ids that are not in the shop's synced catalog (another shop's, made up).

    `rules.validate` checks segment and list ids; products and collections are Shopify's, so they are
    checked here against the tables the pickers search.
    """
    wanted: list[tuple[str, str, str]] = []  # (path, kind, id)
    pending: list[tuple[Any, str]] = [(definition, "")]  # a stack, not recursion: the input is untrusted
    while pending:
        node, path = pending.pop()
        if not isinstance(node, dict):
            continue
        if "field" in node:
            field, value = node.get("field"), node.get("value")
            if field in ("ordered_product", "ordered_collection") and isinstance(value, list):
                kind = "product" if field == "ordered_product" else "collection"
                wanted.extend((f"{path}.value[{i}]", kind, str(v)) for i, v in enumerate(value))
            elif field == "line_items" and node.get("attribute") == "product_id" and value is not None:
                wanted.append((f"{path}.value", "product", str(value)))
            elif field == "event":  # a browsing event's id filters
                for key, kind in (("products", "product"), ("collections", "collection")):
                    if isinstance(node.get(key), list):
                        wanted.extend((f"{path}.{key}[{i}]", kind, str(v)) for i, v in enumerate(node[key]))
            continue
        items = node.get("rules")
        if isinstance(items, list):
            pending.extend((item, f"{path}.rules[{i}]" if path else f"rules[{i}]")
                           for i, item in reversed(list(enumerate(items))))
    known = {"product": set(), "collection": set()}
    for kind, model in (("product", Product), ("collection", Collection)):
        ids = _ids(v for _, k, v in wanted if k == kind)
        if ids:
            known[kind] = {str(i) for i in session.scalars(
                select(model.shopify_id).where(model.shop_id == shop_id, model.shopify_id.in_(ids)))}
    errors = []
    for path, kind, value in wanted:
        number = record_id(value)  # one past the range is the contract's error ("is not a valid id")
        if number is not None and str(number) not in known[kind]:
            errors.append({"path": path, "message": f"there is no {kind} {number} in this shop"})
    return errors


def check(session: OrmSession, shop_id: int, definition: Any, *, segment_id: int | None = None
          ) -> tuple[Definition | None, list[dict[str, str]]]:
    """(normalised definition, []) when a definition is fine for the shop, else (None, every error).

    The contract (`rules.validate`, including the shop's segments and lists) and the shop's catalog
    (`catalog_errors`) together: what the builder and the API check before saving or previewing.
    """
    errors = catalog_errors(session, shop_id, definition)
    try:
        normalised = validate(definition, shop_id=shop_id, session=session, segment_id=segment_id)
    except DefinitionError as exc:
        return None, exc.errors + errors
    return (None, errors) if errors else (normalised, [])


def search_catalog(session: OrmSession, shop_id: int, kind: str, query: str, *, limit: int = PICKER_LIMIT
                   ) -> list[tuple[str, str]]:
    """(Shopify id, title) of the shop's products or collections whose title contains `query` (or whose id is it)."""
    model = Product if kind == "product" else Collection
    statement = select(model.shopify_id, model.title).where(model.shop_id == shop_id)
    query = query.strip()[:100]
    if query:
        conditions = [model.title.icontains(query, autoescape=True)]
        if record_id(query) is not None:
            conditions.append(model.shopify_id == record_id(query))
        statement = statement.where(or_(*conditions))
    rows = session.execute(statement.order_by(func.lower(model.title), model.shopify_id).limit(limit))
    return [(str(i), title) for i, title in rows]
