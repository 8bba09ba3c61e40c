"""Browsing segment rules (issue 23): the events `visited`, `viewed_product`, `viewed_collection`, `added_to_cart`
(id filters, `not_followed_by`) and the `last_visit` date rule, from the storefront events the web pixel stores.

The compiler's answer for each operator, in the shop's time zone and at the edges of periods, in both shapes and
against the naive row-by-row evaluator (bench/naive_segments.py); the validator's refusals, through the API and the
builder too; the suggested segments; the hourly sweep; and the throttled re-checks that storefront activity queues
(events inserted directly: the pixel endpoint announces the same signal), through the real Redis queue.
"""
from __future__ import annotations

import datetime as dt
import os
import random
import uuid

import pytest
from sqlalchemy import func, select

from bench import naive_segments
from kinnekt import signals
from kinnekt.models import CollectionProduct, Segment, SegmentMember, StorefrontEvent
from kinnekt.segments import membership, rules, service, summaries, tasks
from kinnekt.segments.references import Names, catalog_errors
from kinnekt.segments.rules import DefinitionError, normalise
from kinnekt.web import segment_form
from tests import factories
from tests.factories import rule, where
from tests.test_segment_compiler import NOW, add, at, both_shapes, buyer, ids, matching, order, subscriber

UTC = dt.timezone.utc
P1, P2, P3 = 7001, 7002, 7003
SUMMER, WINTER = 9001, 9002
# The shop is in New York (EDT on NOW, 2026-03-15 12:00 local): today began at 04:00 UTC, yesterday at 04:00 UTC
# the day before.
TODAY = at("2026-03-15T04:00")
YESTERDAY = at("2026-03-14T04:00")


def seen(db, shop, sub, name="page_viewed", *, when=NOW - dt.timedelta(hours=1), product=None, collection=None):
    """One storefront event of `sub` (None: a browser no one is known for)."""
    return add(db, StorefrontEvent(shop_id=shop.id, event_id=f"e{factories.serial()}", name=name, occurred_at=when,
                                   client_id="browser-1", subscriber_id=sub.id if sub is not None else None,
                                   product_id=product, collection_id=collection))


def event(name, op="performed", **extras):
    return {"field": "event", "event": name, "op": op, **extras}


def errors_of(definition) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        normalise(definition)
    return [(e["path"], e["message"]) for e in caught.value.errors]


# ---------------------------------------------------------------------------------------------- visited

def test_visited_counts_page_views_inside_the_window_in_the_shops_time_zone(db, shop, other_shop):
    first_thing = subscriber(db, shop)
    seen(db, shop, first_thing, when=TODAY)  # the first instant of today, local
    late_night = subscriber(db, shop)
    seen(db, shop, late_night, when=TODAY - dt.timedelta(seconds=1))  # 23:59:59 yesterday, local
    product_only = subscriber(db, shop)
    seen(db, shop, product_only, "product_viewed", when=NOW - dt.timedelta(minutes=5), product=P1)
    regular = subscriber(db, shop)
    for days in (2, 3, 6):
        seen(db, shop, regular, when=NOW - dt.timedelta(days=days))
    nobody = subscriber(db, shop)
    seen(db, shop, None, when=NOW - dt.timedelta(minutes=1))  # not attributed: no one's
    seen(db, other_shop, subscriber(db, other_shop), when=NOW - dt.timedelta(minutes=1))

    assert matching(db, shop, event("visited", within="today")) == ids(first_thing)
    assert matching(db, shop, event("visited", within="yesterday")) == ids(late_night)
    assert matching(db, shop, event("visited", within="last_7_days", at_least=3)) == ids(regular)
    assert matching(db, shop, event("visited", within="last_7_days", at_least=4)) == set()
    assert matching(db, shop, event("visited", "not_performed", within="today")) \
        == ids(late_night, product_only, regular, nobody)
    assert matching(db, shop, event("visited")) == ids(first_thing, late_night, regular)
    # a custom period holds both local days whole
    assert matching(db, shop, event("visited", within={"from": "2026-03-13", "to": "2026-03-14"})) \
        == ids(late_night, regular)
    # {"last_days": N} runs from exactly now - N×24h, that instant included
    edge = subscriber(db, shop)
    seen(db, shop, edge, when=NOW - dt.timedelta(days=2))
    assert edge.id in matching(db, shop, event("visited", within={"last_days": 2}))
    assert edge.id not in matching(db, shop, event("visited", within={"last_days": 2}),
                                   now=NOW + dt.timedelta(seconds=1))


# ---------------------------------------------------------------------------------------------- last_visit

@pytest.fixture
def visitors(db, shop):
    """Subscribers whose newest page view is today, late yesterday, two weeks ago, or who never visited."""
    today = subscriber(db, shop)
    seen(db, shop, today, when=TODAY)
    seen(db, shop, today, when=at("2026-03-03T12:00"))  # an older visit inside the custom range below
    yesterday = subscriber(db, shop)
    seen(db, shop, yesterday, when=TODAY - dt.timedelta(seconds=1))
    long_ago = subscriber(db, shop)
    seen(db, shop, long_ago, when=at("2026-03-01T12:00"))
    seen(db, shop, long_ago, "product_viewed", when=NOW - dt.timedelta(minutes=1), product=P1)  # not a page view
    never = subscriber(db, shop)
    return today, yesterday, long_ago, never


@pytest.mark.parametrize("op,value,expected", [
    ("eq", "today", [0]),
    ("eq", "yesterday", [1]),
    ("neq", "today", [1, 2, 3]),
    ("eq", "last_7_days", [0, 1]),
    ("eq", "all_time", [0, 1, 2]),
    ("eq", {"from": "2026-03-01", "to": "2026-03-14"}, [1, 2]),  # the newest visit counts, not an older one inside
    ("before", "2026-03-15", [1, 2]),
    ("after", "2026-03-14", [0]),
    ("within_last_days", 1, [0, 1]),
    ("more_than_days_ago", 10, [2]),
    ("never", None, [3]),
])
def test_last_visit_is_the_newest_page_view_under_every_date_operator(db, shop, visitors, op, value, expected):
    assert matching(db, shop, rule("last_visit", op, value)) == ids(*(visitors[i] for i in expected))
    naive = naive_segments.load(db, shop.id)
    assert both_shapes(db, shop, where(rule("last_visit", op, value)), naive) == ids(*(visitors[i] for i in expected))


def test_last_visit_in_another_time_zone(db, shop, visitors):
    shop.timezone = "Asia/Tokyo"  # 2026-03-16 01:00 there: "today" began at 2026-03-15 15:00 UTC
    db.flush()
    today, yesterday, long_ago, never = visitors
    assert matching(db, shop, rule("last_visit", "eq", "today")) == set()
    assert matching(db, shop, rule("last_visit", "eq", "yesterday")) == ids(today, yesterday)


# ---------------------------------------------------------------------------------------------- products

@pytest.fixture
def catalog(db, shop):
    """P1 and P2 are in the Summer collection, P3 in Winter."""
    for collection, product in ((SUMMER, P1), (SUMMER, P2), (WINTER, P3)):
        add(db, CollectionProduct(shop_id=shop.id, collection_id=collection, product_id=product))


def test_viewed_product_filters_by_products_and_by_collections_now(db, shop, catalog):
    socks = subscriber(db, shop)
    seen(db, shop, socks, "product_viewed", product=P1)
    coat = subscriber(db, shop)
    seen(db, shop, coat, "product_viewed", product=P3)
    seen(db, shop, coat, "product_viewed", product=P3, when=NOW - dt.timedelta(days=2))
    unknown = subscriber(db, shop)
    seen(db, shop, unknown, "product_viewed", product=None)  # a view without a product id matches no filter
    page_only = subscriber(db, shop)
    seen(db, shop, page_only)

    assert matching(db, shop, event("viewed_product")) == ids(socks, coat, unknown)
    assert matching(db, shop, event("viewed_product", products=[str(P1)])) == ids(socks)
    assert matching(db, shop, event("viewed_product", collections=[str(SUMMER)])) == ids(socks)
    assert matching(db, shop, event("viewed_product", products=[P3], collections=[SUMMER])) == ids(socks, coat)
    assert matching(db, shop, event("viewed_product", products=[P3], at_least=2)) == ids(coat)
    assert matching(db, shop, event("viewed_product", products=[P3], at_least=2, within="today")) == set()
    assert matching(db, shop, event("viewed_product", "not_performed", collections=[WINTER])) \
        == ids(socks, unknown, page_only)


def test_viewed_collection_and_added_to_cart(db, shop, catalog):
    browser = subscriber(db, shop)
    seen(db, shop, browser, "collection_viewed", collection=SUMMER)
    carter = subscriber(db, shop)
    seen(db, shop, carter, "product_added_to_cart", product=P2)
    assert matching(db, shop, event("viewed_collection")) == ids(browser)
    assert matching(db, shop, event("viewed_collection", collections=[SUMMER])) == ids(browser)
    assert matching(db, shop, event("viewed_collection", collections=[WINTER])) == set()
    assert matching(db, shop, event("added_to_cart", collections=[SUMMER])) == ids(carter)
    assert matching(db, shop, event("added_to_cart", products=[P1])) == set()


# ---------------------------------------------------------------------------------------------- the two examples

VIEWED_NOT_ORDERED = event("viewed_product", within={"last_days": 7}, not_followed_by="placed_order")
CARTED_NO_CHECKOUT = event("added_to_cart", within={"last_days": 7}, not_followed_by="started_checkout")


def test_viewed_a_product_in_the_last_7_days_and_did_not_order_it(db, shop):
    viewed = NOW - dt.timedelta(days=2)

    def viewer(*products, when=viewed):
        sub, person = buyer(db, shop)
        for product in products:
            seen(db, shop, sub, "product_viewed", product=product, when=when)
        return sub, person

    browsing, _ = viewer(P1)
    bought_it, person = viewer(P1)
    order(db, shop, person, created_at=viewed + dt.timedelta(hours=3), lines=[{"product_id": P1}])
    bought_another, person = viewer(P1)
    order(db, shop, person, created_at=viewed + dt.timedelta(hours=3), lines=[{"product_id": P2}])
    bought_before, person = viewer(P1)
    order(db, shop, person, created_at=viewed - dt.timedelta(days=5), lines=[{"product_id": P1}])
    cancelled, person = viewer(P1)
    order(db, shop, person, created_at=viewed + dt.timedelta(hours=1), lines=[{"product_id": P1}],
          cancelled_at=viewed + dt.timedelta(hours=2))
    test_order, person = viewer(P1)
    order(db, shop, person, created_at=viewed + dt.timedelta(hours=1), lines=[{"product_id": P1}], test=True)
    same_instant, person = viewer(P1)
    order(db, shop, person, created_at=viewed, lines=[{"product_id": P1}])
    one_of_two, person = viewer(P1, P2)
    order(db, shop, person, created_at=viewed + dt.timedelta(hours=1), lines=[{"product_id": P1}])
    too_long_ago, _ = viewer(P1, when=NOW - dt.timedelta(days=8))
    unlinked = subscriber(db, shop)
    seen(db, shop, unlinked, "product_viewed", product=P3, when=viewed)

    expected = ids(browsing, bought_another, bought_before, cancelled, test_order, one_of_two, unlinked)
    assert matching(db, shop, VIEWED_NOT_ORDERED) == expected
    assert both_shapes(db, shop, where(VIEWED_NOT_ORDERED), naive_segments.load(db, shop.id)) == expected
    # "did not order it" is about the product viewed: a filter narrows which views count
    assert matching(db, shop, {**VIEWED_NOT_ORDERED, "products": [P2]}) == ids(one_of_two)


def test_added_to_cart_and_did_not_start_checkout(db, shop):
    added = NOW - dt.timedelta(days=1)
    abandoned = subscriber(db, shop)
    seen(db, shop, abandoned, "product_added_to_cart", product=P1, when=added)
    checked_out = subscriber(db, shop)
    seen(db, shop, checked_out, "product_added_to_cart", product=P1, when=added)
    seen(db, shop, checked_out, "checkout_started", when=added + dt.timedelta(minutes=4))
    earlier_checkout = subscriber(db, shop)
    seen(db, shop, earlier_checkout, "checkout_started", when=added - dt.timedelta(hours=1))
    seen(db, shop, earlier_checkout, "product_added_to_cart", product=P2, when=added)
    came_back = subscriber(db, shop)  # added, checked out, then added again and left
    seen(db, shop, came_back, "product_added_to_cart", product=P1, when=added - dt.timedelta(hours=2))
    seen(db, shop, came_back, "checkout_started", when=added - dt.timedelta(hours=1))
    seen(db, shop, came_back, "product_added_to_cart", product=P2, when=added)
    someone_elses = subscriber(db, shop)
    seen(db, shop, someone_elses, "product_added_to_cart", product=P1, when=added)
    seen(db, shop, None, "checkout_started", when=added + dt.timedelta(minutes=1))  # an unknown browser's checkout

    expected = ids(abandoned, earlier_checkout, came_back, someone_elses)
    assert matching(db, shop, CARTED_NO_CHECKOUT) == expected
    assert both_shapes(db, shop, where(CARTED_NO_CHECKOUT), naive_segments.load(db, shop.id)) == expected
    assert matching(db, shop, event("added_to_cart", "not_performed", not_followed_by="started_checkout")) \
        == ids(checked_out)


def test_viewed_but_not_added_to_cart_is_about_the_same_product(db, shop):
    looked = subscriber(db, shop)
    seen(db, shop, looked, "product_viewed", product=P1, when=NOW - dt.timedelta(hours=2))
    seen(db, shop, looked, "product_added_to_cart", product=P2, when=NOW - dt.timedelta(hours=1))
    added = subscriber(db, shop)
    seen(db, shop, added, "product_viewed", product=P1, when=NOW - dt.timedelta(hours=2))
    seen(db, shop, added, "product_added_to_cart", product=P1, when=NOW - dt.timedelta(hours=1))
    assert matching(db, shop, event("viewed_product", not_followed_by="added_to_cart")) == ids(looked)


def test_the_two_examples_are_suggested_segments(db, shop):
    suggested = {s.name: s.definition for s in service.suggested_segments()}
    viewed = [d for d in suggested.values() if d["rules"] == [VIEWED_NOT_ORDERED]]
    carted = [d for d in suggested.values() if d["rules"] == [CARTED_NO_CHECKOUT]]
    assert len(viewed) == 1 and len(carted) == 1
    for definition in (viewed[0], carted[0]):
        assert rules.validate(definition, shop_id=shop.id, session=db) == normalise(definition)
        assert rules.has_relative_time(definition)


# ---------------------------------------------------------------------------------------------- random data

def test_both_shapes_and_the_naive_reading_agree_on_random_browsing(db, shop, other_shop, catalog):
    rng = random.Random(23)
    people = []
    for _ in range(25):
        sub, person = buyer(db, shop) if rng.random() < 0.7 else (subscriber(db, shop), None)
        people.append(sub)
        for _ in range(rng.randint(0, 8)):
            name = rng.choice(["page_viewed", "product_viewed", "collection_viewed", "product_added_to_cart",
                               "checkout_started", "search_submitted"])
            seen(db, shop, sub, name, when=NOW - dt.timedelta(hours=rng.randint(0, 24 * 12)),
                 product=rng.choice([P1, P2, P3, None]), collection=rng.choice([SUMMER, WINTER, None]))
        if person is not None and rng.random() < 0.5:
            order(db, shop, person, created_at=NOW - dt.timedelta(hours=rng.randint(0, 24 * 12)),
                  lines=[{"product_id": rng.choice([P1, P2, P3])}], test=rng.random() < 0.1)
    seen(db, other_shop, subscriber(db, other_shop), "product_viewed", product=P1)
    naive = naive_segments.load(db, shop.id)
    windows = ["all_time", "today", "yesterday", "last_7_days", {"last_days": 3},
               {"from": "2026-03-08", "to": "2026-03-12"}]
    answers = set()
    for _ in range(60):
        name = rng.choice(list(naive_segments.BROWSING))
        built = event(name, rng.choice(["performed", "not_performed"]), within=rng.choice(windows),
                      at_least=rng.choice([1, 1, 2]))
        for key in rules.EVENT_FILTERS.get(name, ()):
            if rng.random() < 0.4:
                built[key] = rng.sample([P1, P2, P3] if key == "products" else [SUMMER, WINTER], rng.randint(1, 2))
        if name in rules.FOLLOWERS and rng.random() < 0.6:
            built["not_followed_by"] = rng.choice(rules.FOLLOWERS[name])
        other = rng.choice([rule("last_visit", "within_last_days", rng.randint(1, 10)),
                            rule("last_visit", "eq", rng.choice(["today", "last_7_days"])),
                            event(rng.choice(list(naive_segments.BROWSING)))])
        answers.add(frozenset(both_shapes(db, shop, where(built, other, match=rng.choice(["all", "any"])), naive)))
        answers.add(frozenset(both_shapes(db, shop, where(built), naive)))
    assert len(answers) > 10  # the rules told people apart


# ---------------------------------------------------------------------------------------------- the validator

def test_browsing_rules_normalise():
    assert normalise(where(event("viewed_product", products=[P1, str(P1), "7002"], collections=[SUMMER],
                                 not_followed_by="placed_order"))) == where(
        {"field": "event", "event": "viewed_product", "op": "performed", "within": "all_time", "at_least": 1,
         "products": ["7001", "7002"], "collections": ["9001"], "not_followed_by": "placed_order"})
    assert normalise(where(rule("last_visit", "within_last_days", 3)))["rules"][0] == rule(
        "last_visit", "within_last_days", 3)


@pytest.mark.parametrize("bad,expected", [
    (event("visited", products=[P1]), ("rules[0].products", "'products' is only allowed on the events "
                                                           "viewed_product, added_to_cart")),
    (event("viewed_collection", products=[P1]), ("rules[0].products", "'products' is only allowed on the events "
                                                                      "viewed_product, added_to_cart")),
    (event("placed_order", collections=[SUMMER]), ("rules[0].collections", "'collections' is only allowed on the "
                                                   "events viewed_product, added_to_cart, viewed_collection")),
    (event("visited", not_followed_by="placed_order"),
     ("rules[0].not_followed_by", "'not_followed_by' is only allowed on the events viewed_product, added_to_cart")),
    (event("added_to_cart", not_followed_by="added_to_cart"),
     ("rules[0].not_followed_by", "must be one of placed_order, started_checkout")),
    (event("viewed_product", not_followed_by={"event": "placed_order"}),
     ("rules[0].not_followed_by", "must be one of placed_order, added_to_cart, started_checkout")),
    (event("viewed_product", products=[]), ("rules[0].products", "must not be empty")),
    (event("viewed_product", products="7001"), ("rules[0].products", "must be a list")),
    (event("viewed_product", products=["gid://shopify/Product/1"]),
     ("rules[0].products[0]", "must be an id: a string of digits")),
    (event("viewed_product", collections=[0]), ("rules[0].collections[0]", "is not a valid id")),
    (event("viewed_product", products=[2**63]), ("rules[0].products[0]", "is not a valid id")),
    (event("viewed_product", products=[True]), ("rules[0].products[0]", "must be an id: a string of digits")),
    (event("viewed_product", products=[P1] * 251), ("rules[0].products", "holds at most 250 items")),
    ({**event("visited"), "value": 3}, ("rules[0].value", "'performed' takes no value; omit 'value'")),
    ({**event("visited"), "product": P1}, ("rules[0].product", "unknown key 'product'")),
    (rule("money_spent", "gt", 5, products=[P1]), ("rules[0].products", "'products' is only allowed on event rules")),
    (rule("last_visit", "eq", "last_week"), ("rules[0].value", "must be one of all_time, today, yesterday, "
                                             "last_7_days, last_30_days, last_90_days or {\"from\", \"to\"}")),
    (rule("last_visit", "within_last_days", 0), ("rules[0].value", "must be a whole number of at least 1")),
    (rule("last_visit", "never", 3), ("rules[0].value", "'never' takes no value; omit 'value'")),
    (rule("last_visit", "performed"), ("rules[0].op", "'performed' is not an operator of last_visit (allowed: eq, "
                                       "neq, before, after, within_last_days, more_than_days_ago, never)")),
    ({**rule("last_visit", "within_last_days", 3), "within": "today"},
     ("rules[0].within", "'within' is only allowed on event rules")),
])
def test_bad_browsing_rules_are_refused_naming_the_path(bad, expected):
    assert errors_of(where(bad)) == [expected]


def test_browsing_ids_must_be_in_the_shops_catalog(db, shop, other_shop):
    from kinnekt.models import Collection, Product
    add(db, Product(shop_id=shop.id, shopify_id=P2, title="Merino socks"))
    add(db, Product(shop_id=other_shop.id, shopify_id=P3, title="Theirs"))
    add(db, Collection(shop_id=shop.id, shopify_id=SUMMER, title="Summer"))
    definition = where(event("viewed_product", products=[P2, P3], collections=[SUMMER, WINTER]))
    assert catalog_errors(db, shop.id, definition) == [
        {"path": "rules[0].products[1]", "message": f"there is no product {P3} in this shop"},
        {"path": "rules[0].collections[1]", "message": f"there is no collection {WINTER} in this shop"}]


HOSTILE = [
    {"match": "all", "rules": [{"field": "event", "event": "viewed_product", "op": "performed",
                                "products": {"$gt": 1}, "collections": [[1]], "not_followed_by": None}]},
    {"match": "all", "rules": [{"field": "event", "event": ["visited"], "op": "performed", "products": [1]}]},
    {"match": "all", "rules": [{"field": "last_visit", "op": "eq", "value": {"from": "2026-02-30", "to": 5}}]},
    {"match": "all", "rules": [{"field": "event", "event": "added_to_cart", "op": "performed",
                                "not_followed_by": ["started_checkout"], "within": {"last_days": 10**30}}]},
    {"match": "all", "rules": [{"field": "event", "event": "viewed_collection", "op": "not_performed",
                                "collections": ["9" * 40], "at_least": "2"}]},
]


@pytest.mark.parametrize("definition", HOSTILE)
def test_hostile_browsing_rules_get_422_from_the_api_and_save_nothing(client, shop, token_for, definition):
    headers = {"Authorization": f"Bearer {token_for(shop.domain)}"}
    response = client.post("/api/segments", json={"name": "Hostile", "definition": definition}, headers=headers)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert errors and all(e["path"].startswith("rules[0]") and e["message"] for e in errors)
    from kinnekt.db import Session
    assert Session.scalar(select(func.count()).select_from(Segment).execution_options(all_shops=True)) == 0


def test_hostile_builder_posts_are_shown_beside_the_row_not_a_500(client, shop, auth):
    from werkzeug.datastructures import MultiDict
    tree = segment_form.definition_to_tree(where(event("viewed_product", products=[P1])))
    pairs = segment_form.form_data(tree, "Hostile")
    key = tree.items[0].key
    pairs += [(f"rule-{key}-products", "gid://shopify/Product/1"), (f"rule-{key}-not-followed-by", "dance"),
              (f"rule-{key}-collections", "x" * 5000)]
    for url in ("/segments/preview", "/segments/"):
        response = client.post(url, data=MultiDict(pairs), headers=auth)
        assert response.status_code in (200, 422), response.status_code
        assert "must be one of" in response.get_data(as_text=True) or "Shopify ID" in response.get_data(as_text=True)
    from kinnekt.db import Session
    assert Session.scalar(select(func.count()).select_from(Segment).execution_options(all_shops=True)) == 0


# ---------------------------------------------------------------------------------------------- words and the builder

def test_builder_errors_name_the_browsing_input():
    paths = {"": "root", "rules[0]": "r1"}
    assert segment_form.locate_errors([
        {"path": "rules[0].products[1]", "message": "must be an id: a string of digits"},
        {"path": "rules[0].collections[0]", "message": "there is no collection 5 in this shop"},
        {"path": "rules[0].not_followed_by", "message": "must be one of placed_order, started_checkout"}], paths) == [
        ("r1", "Product 2 must be a Shopify ID (digits only)"),
        ("r1", "Collection 1: there is no collection 5 in this shop"),
        ("r1", "What must not follow must be one of the choices offered")]


def test_browsing_rules_in_words():
    names = Names(products={str(P1): "Merino socks"}, collections={str(SUMMER): "Summer"})
    assert summaries.summary(where(VIEWED_NOT_ORDERED), names) == [
        "Event “Viewed a product, and not ordered it after” happened in the past 7 days"]
    assert summaries.summary(where(event("added_to_cart", products=[P1], collections=[SUMMER], at_least=2)), names) \
        == ["Event “Added to cart: Merino socks or a product of Summer” happened at least 2 times at any time"]
    assert summaries.summary(where(event("viewed_collection", "not_performed", collections=[SUMMER])), names) \
        == ["Event “Viewed a collection: Summer” did not happen at any time"]
    assert summaries.summary(where(rule("last_visit", "more_than_days_ago", 30))) == [
        "Last store visit was more than 30 days ago"]


@pytest.mark.parametrize("definition", [
    where(VIEWED_NOT_ORDERED),
    where(CARTED_NO_CHECKOUT),
    where(event("viewed_product", products=[str(P1), str(P2)], collections=[str(SUMMER)], at_least=2,
                within={"from": "2026-03-01", "to": "2026-03-02"})),
    where(event("viewed_collection", "not_performed", collections=[str(WINTER)])),
    where(rule("last_visit", "eq", {"from": "2026-03-01", "to": "2026-03-02"}), event("visited", within="today")),
])
def test_the_builder_form_round_trips_browsing_rules(definition):
    tree = segment_form.definition_to_tree(normalise(definition))
    from werkzeug.datastructures import MultiDict
    parsed = segment_form.parse_form(MultiDict(segment_form.form_data(tree, "Browsing")))
    assert normalise(parsed.definition) == normalise(definition)


def test_a_filter_the_new_event_does_not_take_is_dropped():
    row = segment_form.rule_to_row(normalise(where(event("viewed_product", products=[P1],
                                                         not_followed_by="placed_order")))["rules"][0])
    row.set("event", "visited")
    assert segment_form.row_to_rule(row) == {"field": "event", "op": "performed", "event": "visited",
                                             "within": "all_time", "at_least": 1}


# ---------------------------------------------------------------------------------------------- time passing

def test_browsing_segments_are_swept_and_people_drop_out_as_time_passes(db, shop):
    sub = subscriber(db, shop)
    seen(db, shop, sub, when=NOW - dt.timedelta(days=6))
    row = factories.segment(db, shop, where(event("visited", within={"last_days": 7})),
                            has_relative_time=True, kind="manual", commit=False)
    db.commit()
    assert row.id in membership.segments_to_sweep(db)
    membership.build(db, row.id, now=NOW)
    assert db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == row.id)).all() == [sub.id]
    assert membership.sweep(db, now=NOW + dt.timedelta(days=1, seconds=1)) >= 1
    assert db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == row.id)).all() == []
    for definition in (where(rule("last_visit", "within_last_days", 7)), where(event("viewed_product"))):
        assert rules.has_relative_time(definition) is (definition["rules"][0]["field"] == "last_visit")


# ---------------------------------------------------------------------------------------------- re-checks on events

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_queue(app, monkeypatch):
    """The app's jobs go to a real RQ queue (Redis) of this test's own name; nothing runs them but the test."""
    from kinnekt import queue as kqueue
    real = kqueue.RQJobQueue(REDIS_URL, f"test-browsing-{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(app.extensions, "kinnekt_queue", real)
    monkeypatch.setattr(kqueue, "_queue", real)
    yield real
    for lane in real.lanes.values():
        for registry in (lane.scheduled_job_registry,):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)
        lane.empty()
    for key in real.redis.scan_iter(match=f"kinnekt:batch:{real.name}:*"):
        real.redis.delete(key)


def queued_runs(queue) -> list:
    """The browsing re-check runs waiting in the queue (now or scheduled), as (job id, args)."""
    from rq.job import Job
    job_ids = []
    for lane in queue.lanes.values():
        job_ids += lane.job_ids + lane.scheduled_job_registry.get_job_ids()
    jobs = [Job.fetch(job_id, connection=queue.redis) for job_id in job_ids]
    return [(job.id, job.args) for job in jobs if job.func_name.endswith("recheck_browsing")]


@pytest.fixture
def recheck_calls(monkeypatch):
    """Every re-check the browsing runs make, as (sorted subscriber ids, sorted segment ids); each is still made."""
    calls = []
    real = membership.recheck

    def spy(session, shop_id, subscriber_ids, **kwargs):
        calls.append((sorted(subscriber_ids), sorted(kwargs.get("segment_ids") or [])))
        return real(session, shop_id, subscriber_ids, **kwargs)

    monkeypatch.setattr(membership, "recheck", spy)
    return calls


def test_a_burst_of_1000_events_for_100_subscribers_costs_one_delayed_run(db, shop, redis_queue, recheck_calls):
    people = [factories.subscriber(db, shop) for _ in range(100)]
    browsing = factories.segment(db, shop, where(event("visited", at_least=10)), kind="manual")
    plain = factories.segment(db, shop, where(rule("country", "eq", "US")), kind="manual")
    announced = 0
    for batch in range(100):  # the pixel endpoint commits 100 batches of 10 events and announces each
        owners = [people[(batch * 10 + i) % 100] for i in range(10)]
        for owner in owners:
            seen(db, shop, owner, when=NOW - dt.timedelta(seconds=batch))
        db.commit()
        signals.announce(signals.storefront_activity, db, shop_id=shop.id, subscriber_ids=[o.id for o in owners])
        announced += 1
    runs = queued_runs(redis_queue)
    assert announced == 100 and len(runs) == 1 and runs[0][1] == (shop.id,)
    assert redis_queue.lanes["default"].count == 0  # scheduled STOREFRONT_RECHECK_SECONDS ahead, not queued now
    assert tasks.recheck_browsing(shop.id) == 100  # the run, as the scheduler would start it
    assert recheck_calls == [(sorted(p.id for p in people), [browsing.id])]  # once each, the browsing segment only
    assert db.scalar(select(func.count()).select_from(SegmentMember).where(SegmentMember.segment_id == browsing.id)) \
        == 100
    assert db.scalar(select(func.count()).select_from(SegmentMember).where(SegmentMember.segment_id == plain.id)) == 0


def test_a_subscriber_seen_again_during_a_run_waits_for_the_next_one(db, shop, redis_queue, monkeypatch):
    first, second = factories.subscriber(db, shop), factories.subscriber(db, shop)
    factories.segment(db, shop, where(event("visited")), kind="manual")
    calls = []
    real = membership.recheck

    def recheck(session, shop_id, subscriber_ids, **kwargs):
        calls.append(sorted(subscriber_ids))
        if len(calls) == 1:  # new events of both arrive while the run re-checks the first
            tasks.enqueue_recheck_browsing(shop_id, [first.id, second.id])
        return real(session, shop_id, subscriber_ids, **kwargs)

    monkeypatch.setattr(membership, "recheck", recheck)
    tasks.enqueue_recheck_browsing(shop.id, [first.id])
    assert len(queued_runs(redis_queue)) == 1
    tasks.recheck_browsing(shop.id)
    assert calls == [[first.id], [second.id]]  # the first is not re-checked twice in one run
    later = queued_runs(redis_queue)
    assert len(later) == 2  # the first run's job (not run by a worker here) and the delayed successor for `first`
    assert redis_queue.take_batch(membership.browsing_group(shop.id)) == [first.id]


def test_a_shop_without_browsing_segments_queues_nothing(db, shop, redis_queue):
    sub = factories.subscriber(db, shop)
    factories.segment(db, shop, where(rule("country", "eq", "US")), kind="manual")
    seen(db, shop, sub)
    db.commit()
    signals.announce(signals.storefront_activity, db, shop_id=shop.id, subscriber_ids=[sub.id])
    assert queued_runs(redis_queue) == []


def test_a_segment_referring_to_a_browsing_segment_is_rechecked_too(db, shop):
    browsing = factories.segment(db, shop, where(rule("last_visit", "eq", "today")), kind="manual")
    referring = factories.segment(db, shop, where(rule("segment", "in", browsing.id)), kind="manual")
    factories.segment(db, shop, where(rule("country", "eq", "US")), kind="manual")
    assert membership.browsing_segments(db, shop.id) == sorted([browsing.id, referring.id])


def test_recovery_queues_a_run_for_browsing_rechecks_left_pending(db, shop, redis_queue):
    redis_queue.redis.sadd(f"kinnekt:batch:{redis_queue.name}:{membership.browsing_group(shop.id)}", 5)
    assert tasks.requeue_pending_rechecks() == 1
    assert [args for _, args in queued_runs(redis_queue)] == [(shop.id,)]


def test_new_events_move_people_into_segments_in_the_demo_queue_too(app, db, shop, monkeypatch):
    """The in-process queue (the demo's) runs the delayed re-check, and waiting for its jobs waits for it."""
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "STOREFRONT_RECHECK_SECONDS", 0.5)
    sub = factories.subscriber(db, shop)
    row = factories.segment(db, shop, where(CARTED_NO_CHECKOUT), kind="manual")
    membership.build(db, row.id)
    seen(db, shop, sub, "product_added_to_cart", product=P1, when=dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    db.commit()
    signals.announce(signals.storefront_activity, db, shop_id=shop.id, subscriber_ids=[sub.id])
    assert app.extensions["kinnekt_queue"].drain(30)
    assert db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == row.id)).all() == [sub.id]
    seen(db, shop, sub, "checkout_started", when=dt.datetime.now(UTC))
    db.commit()
    signals.announce(signals.storefront_activity, db, shop_id=shop.id, subscriber_ids=[sub.id])
    assert app.extensions["kinnekt_queue"].drain(30)
    db.expire_all()
    assert db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == row.id)).all() == []
