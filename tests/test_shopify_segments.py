"""Shopify customer segments as a segment rule: reading them from the Admin API (paged, or through a members query
for a large one, throttling retried) into `shopify_segment_members`, the `shopify_segment` rule (validation, SQL,
words with the time of the last read), the re-check a refresh causes (entries and leaves logged), and the routes,
against the fake Shopify, on both databases."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Segment, SegmentEvent, SegmentMember, ShopifySegment, ShopifySegmentMember
from kinnekt.segments import compiler, membership, references, summaries
from kinnekt.segments.rules import DefinitionError, normalise, validate
from kinnekt.shopify import customer_segments
from kinnekt.shopify.graphql import client_for
from kinnekt.web import segment_form
from tests import factories
from tests.factories import rule, where
from tests.fake_shopify import connect

pytestmark = pytest.mark.usefixtures("settled_jobs")

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def live(db, fake_shopify, shop):
    """The shop, connected to the fake Shopify; returns the fake's shop."""
    connect(fake_shopify, shop)
    return fake_shopify.shop(shop.domain)


def people(shop, customer_ids):
    """A subscribed subscriber per Shopify customer id, linked to that customer; {customer id: subscriber}."""
    out = {}
    for i, customer_id in enumerate(customer_ids):
        customer = factories.customer(Session, shop, shopify_id=customer_id)
        out[customer_id] = factories.subscriber(Session, shop, phone=f"+1212555{1000 + i:04d}", customer=customer,
                                                subscribed_at=utcnow())
    return out


def stored(shop, shopify_id) -> set[int]:
    return set(Session.scalars(select(ShopifySegmentMember.customer_id).where(
        ShopifySegmentMember.shop_id == shop.id, ShopifySegmentMember.segment_id == shopify_id)))


def calls(fake, operation):
    return fake.calls(f"graphql:{operation}")


# ---------------------------------------------------------------------------------------------- reading Shopify

def test_a_refresh_lists_the_segments_and_pages_their_members(shop, live, fake_shopify):
    vip = live.add_segment("VIP", range(1, 2501), query="amount_spent > 500", segment_id=77)
    live.add_segment("Empty", [], segment_id=78)
    result = customer_segments.refresh(Session, shop)
    assert (result.segments, result.errors) == (2, {})
    rows = {row.shopify_id: row for row in Session.scalars(select(ShopifySegment))}
    assert {k: (r.name, r.member_count, r.query) for k, r in rows.items()} == {
        77: ("VIP", 2500, "amount_spent > 500"), 78: ("Empty", 0, "number_of_orders > 0")}
    assert rows[77].refreshed_at is not None and rows[77].last_error is None
    assert stored(shop, 77) == set(vip["members"])
    pages = [c["variables"] for c in calls(fake_shopify, "KinnektSegmentMembers") if c["variables"]["segmentId"]
             == "gid://shopify/Segment/77"]
    assert [(p["first"], p["after"]) for p in pages] == [(1000, None), (1000, "1000"), (1000, "2000")]
    assert calls(fake_shopify, "KinnektSegmentMembersQueryCreate") == []


def test_a_large_segment_is_read_through_a_members_query(shop, live, fake_shopify, monkeypatch):
    monkeypatch.setattr(defaults, "SHOPIFY_SEGMENT_QUERY_THRESHOLD", 1500)
    monkeypatch.setattr(defaults, "SHOPIFY_SEGMENT_QUERY_POLL_SECONDS", 0)
    fake_shopify.segment_query_polls = 3
    live.add_segment("Everyone", range(10, 2010), segment_id=90)
    customer_segments.refresh(Session, shop)
    assert stored(shop, 90) == set(range(10, 2010))
    created = calls(fake_shopify, "KinnektSegmentMembersQueryCreate")
    assert [c["variables"]["input"] for c in created] == [{"segmentId": "gid://shopify/Segment/90"}]
    assert len(calls(fake_shopify, "KinnektSegmentMembersQuery")) == 3  # polled until done
    pages = calls(fake_shopify, "KinnektSegmentQueryMembers")
    query_id = live.member_queries and next(iter(live.member_queries))
    assert [(p["variables"]["queryId"], p["variables"]["after"]) for p in pages] == [(query_id, None),
                                                                                     (query_id, "1000")]


def test_a_members_query_that_never_finishes_keeps_the_old_members_and_shows_the_error(shop, live, fake_shopify,
                                                                                     monkeypatch):
    live.add_segment("Everyone", [1, 2, 3], segment_id=90)
    customer_segments.refresh(Session, shop)
    monkeypatch.setattr(defaults, "SHOPIFY_SEGMENT_QUERY_THRESHOLD", 2)
    monkeypatch.setattr(defaults, "SHOPIFY_SEGMENT_QUERY_POLL_SECONDS", 0)
    monkeypatch.setattr(defaults, "SHOPIFY_SEGMENT_QUERY_MAX_POLLS", 2)
    fake_shopify.segment_query_polls = 50
    live.segments[90]["members"] = [4, 5, 6]
    result = customer_segments.refresh(Session, shop)
    assert 90 in result.errors and "did not finish" in result.errors[90]
    row = Session.scalar(select(ShopifySegment).where(ShopifySegment.shopify_id == 90))
    assert "did not finish" in row.last_error and row.member_count == 3
    assert stored(shop, 90) == {1, 2, 3}


def test_a_throttled_answer_waits_and_tries_again(shop, live, fake_shopify):
    live.add_segment("VIP", [5, 6], segment_id=11)
    fake_shopify.fail_next("throttled", times=2)
    sleeps = []
    client = client_for(shop)
    client._sleep = sleeps.append
    customer_segments.refresh(Session, shop, client=client)
    assert stored(shop, 11) == {5, 6}
    assert len(sleeps) >= 2  # each THROTTLED answer waited for the points before the same call again


def test_a_segment_gone_at_shopify_loses_its_members(shop, live):
    live.add_segment("VIP", [5, 6], segment_id=11)
    customer_segments.refresh(Session, shop)
    del live.segments[11]
    result = customer_segments.refresh(Session, shop)
    assert result.gone == 1 and stored(shop, 11) == set()
    assert Session.scalar(select(ShopifySegment.gone_at).where(ShopifySegment.shopify_id == 11)) is not None


def test_members_are_unique_in_the_database(shop):
    Session.add(ShopifySegmentMember(shop_id=shop.id, segment_id=1, customer_id=2))
    Session.commit()
    Session.add(ShopifySegmentMember(shop_id=shop.id, segment_id=1, customer_id=2))
    with pytest.raises(IntegrityError):
        Session.commit()
    Session.rollback()


# ---------------------------------------------------------------------------------------------- the rule

def shopify_segment(shop, shopify_id, name="VIP", members=(), refreshed_at=NOW):
    row = ShopifySegment(shop_id=shop.id, shopify_id=shopify_id, name=name, query="", member_count=len(members),
                         refreshed_at=refreshed_at)
    Session.add(row)
    Session.add_all([ShopifySegmentMember(shop_id=shop.id, segment_id=shopify_id, customer_id=c) for c in members])
    Session.commit()
    return row


def test_the_rule_takes_a_gid_or_its_digits_and_is_checked_against_the_shops_segments(shop, other_shop):
    shopify_segment(shop, 77)
    shopify_segment(other_shop, 88)
    assert normalise(where(rule("shopify_segment", "in", "gid://shopify/Segment/77"))) == \
        where(rule("shopify_segment", "in", "77"))
    assert validate(where(rule("shopify_segment", "not_in", 77)), shop_id=shop.id, session=Session) == \
        where(rule("shopify_segment", "not_in", "77"))
    with pytest.raises(DefinitionError) as refused:
        validate(where(rule("shopify_segment", "in", "gid://shopify/Segment/88"), rule("shopify_segment", "in", "9"),
                       rule("shopify_segment", "in", "gid://shopify/Product/77"), rule("shopify_segment", "eq", "77")),
                 shop_id=shop.id, session=Session)
    messages = {e["path"]: e["message"] for e in refused.value.errors}
    assert messages["rules[0].value"].startswith("there is no Shopify segment 88 in this shop")
    assert messages["rules[1].value"].startswith("there is no Shopify segment 9 in this shop")
    assert messages["rules[2].value"] == "must be a Shopify segment: gid://shopify/Segment/N or the digits N"
    assert "'eq' is not an operator of shopify_segment" in messages["rules[3].op"]


def test_in_and_not_in_compile_alike_in_both_shapes(shop, other_shop):
    subscribers = people(shop, [101, 102, 103])
    loner = factories.subscriber(Session, shop, phone="+12125559999", subscribed_at=utcnow())  # no customer
    shopify_segment(shop, 77, members=[101, 102, 555])
    shopify_segment(other_shop, 77, members=[103])  # the same Shopify id in another shop is another segment
    ins = {subscribers[101].id, subscribers[102].id}
    everyone = {s.id for s in subscribers.values()} | {loner.id}
    for definition, expected in [
        (where(rule("shopify_segment", "in", "77")), ins),
        (where(rule("shopify_segment", "not_in", "77")), everyone - ins),
        (where(rule("shopify_segment", "in", "77"), rule("country", "eq", "US"), match="any"),
         ins | {s.id for s in Session.scalars(select(factories.Subscriber).where(
             factories.Subscriber.shop_id == shop.id, factories.Subscriber.country == "US"))}),
    ]:
        assert set(compiler.members(Session, definition, shop=shop, now=NOW)) == expected
        for subscriber_id in everyone:
            assert compiler.matches_subscriber(Session, definition, shop=shop, now=NOW,
                                               subscriber_id=subscriber_id) == (subscriber_id in expected)


def test_the_rule_in_words_names_the_segment_and_when_its_members_were_read(shop):
    shopify_segment(shop, 77, name="Big spenders", refreshed_at=dt.datetime(2026, 12, 7, 9, 5, tzinfo=dt.timezone.utc))
    definition = where(rule("shopify_segment", "not_in", "77"), rule("shopify_segment", "in", "78"))
    names = references.load_names(Session, shop.id, [definition])
    assert summaries.summary(definition, names) == [
        "Is not in Shopify segment “Big spenders” (members read Dec 7, 2026 09:05 UTC)",
        "AND Is in Shopify segment #78 (no longer in Shopify)"]


# ---------------------------------------------------------------------------------------------- refresh → re-check

def test_a_refresh_that_changes_members_rechecks_the_segments_using_them(shop, live):
    subscribers = people(shop, [101, 102, 103])
    live.add_segment("VIP", [101, 102], segment_id=77)
    customer_segments.refresh(Session, shop)
    inside = factories.segment(Session, shop, where(rule("shopify_segment", "in", "77")), name="VIP texters")
    outside = factories.segment(Session, shop, where(rule("shopify_segment", "not_in", "77")), name="Not VIP")
    unrelated = factories.segment(Session, shop, where(rule("country", "eq", "US")), name="Americans")
    for seg in (inside, outside, unrelated):
        membership.build(Session, seg.id)
    live.segments[77]["members"] = [102, 103, 999]  # 101 left, 103 entered, 999 is no customer of ours
    result = customer_segments.refresh(Session, shop)
    assert result.changed_customers == 3 and result.membership_changes == 4

    def log(seg):
        return sorted((e.subscriber_id, e.kind, e.cause) for e in Session.scalars(
            select(SegmentEvent).where(SegmentEvent.segment_id == seg.id, SegmentEvent.cause == "recheck")))
    a, c = subscribers[101].id, subscribers[103].id
    assert log(inside) == sorted([(a, "leave", "recheck"), (c, "enter", "recheck")])
    assert log(outside) == sorted([(a, "enter", "recheck"), (c, "leave", "recheck")])
    assert log(unrelated) == []
    members = set(Session.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == inside.id)))
    assert members == {subscribers[102].id, c}
    assert Session.get(Segment, inside.id).member_count == 2
    # A refresh that changes nothing re-checks nobody.
    assert customer_segments.refresh(Session, shop).membership_changes == 0
    assert not any(Session.scalars(select(ShopifySegment.recheck_owed)))


def test_a_refresh_interrupted_before_its_recheck_is_finished_by_the_next(shop, live, monkeypatch):
    subscribers = people(shop, [101, 102])
    live.add_segment("VIP", [101], segment_id=77)
    customer_segments.refresh(Session, shop)
    inside = factories.segment(Session, shop, where(rule("shopify_segment", "in", "77")), name="VIP texters")
    membership.build(Session, inside.id)
    live.segments[77]["members"] = [102]

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")
    real = customer_segments.recheck_customers
    monkeypatch.setattr(customer_segments, "recheck_customers", killed)
    with pytest.raises(SystemExit):
        customer_segments.refresh(Session, shop)
    assert stored(shop, 77) == {102} and Session.scalar(select(ShopifySegment.recheck_owed)) is True
    monkeypatch.setattr(customer_segments, "recheck_customers", real)
    assert customer_segments.refresh(Session, shop).membership_changes == 2
    log = sorted((e.subscriber_id, e.kind, e.cause) for e in Session.scalars(
        select(SegmentEvent).where(SegmentEvent.segment_id == inside.id, SegmentEvent.cause == "recheck")))
    assert log == sorted([(subscribers[101].id, "leave", "recheck"), (subscribers[102].id, "enter", "recheck")])
    assert Session.scalar(select(ShopifySegment.recheck_owed)) is False


# ---------------------------------------------------------------------------------------------- routes

def test_the_refresh_button_queues_the_bulk_job_once(client, auth, shop, jobs):
    response = client.post("/segments/shopify-segments/refresh", headers=auth)
    assert response.status_code == 200 and "Reading your Shopify segments" in response.headers["HX-Trigger"]
    client.post("/segments/shopify-segments/refresh", headers=auth)
    assert [(name, job_id) for name, _args, job_id, _ in jobs.jobs] == [
        ("refresh_shopify_segments", f"shopify-segments-{shop.id}")] * 2  # the queue keeps one per id
    from kinnekt.queue import lane_for
    from kinnekt.shopify.tasks import refresh_shopify_segments
    assert lane_for(refresh_shopify_segments) == "bulk"


def test_the_refresh_is_refused_without_a_session_and_says_so_in_the_demo(client, shop, auth, db):
    assert client.post("/segments/shopify-segments/refresh").status_code in (401, 302, 303)
    shop.is_demo = True
    db.commit()
    response = client.post("/segments/shopify-segments/refresh", headers=auth)
    assert response.status_code == 200 and "no Shopify connection" in response.headers["HX-Trigger"]


def builder_form(definition, name=""):
    tree = segment_form.definition_to_tree(definition)
    return MultiDict(segment_form.form_data(tree, name))


def test_the_builder_offers_the_shops_shopify_segments_with_their_refresh_time(client, auth, shop, other_shop):
    shopify_segment(shop, 77, name="Big spenders", refreshed_at=dt.datetime(2026, 12, 7, 9, 5,
                                                                            tzinfo=dt.timezone.utc))
    shopify_segment(other_shop, 88, name="Their VIPs")
    mine = factories.segment(Session, shop, where(rule("shopify_segment", "in", "77")), name="Mine")
    html = client.get(f"/segments/{mine.id}/edit", headers=auth).get_data(as_text=True)
    assert "Big spenders (members read Dec 7, 2026 09:05 UTC)" in html and "Their VIPs" not in html
    assert 'hx-post="/segments/shopify-segments/refresh"' in html
    page = client.get(f"/segments/{mine.id}", headers=auth).get_data(as_text=True)
    assert "Is in Shopify segment “Big spenders” (members read Dec 7, 2026 09:05 UTC)" in page
    Session.execute(update(ShopifySegment).where(ShopifySegment.shopify_id == 77).values(
        last_error="Shopify answered HTTP 503 for alpha.myshopify.com"))
    Session.commit()
    page = client.get(f"/segments/{mine.id}", headers=auth).get_data(as_text=True)
    assert "Last read failed" in page and "Shopify answered HTTP 503" in page


@pytest.mark.parametrize("value", ["88", "gid://shopify/Segment/88", "gid://shopify/Customer/77", "abc", "0",
                                   "9" * 30])
def test_a_bad_or_other_shops_shopify_segment_is_an_error_not_a_save(client, auth, shop, other_shop, value):
    shopify_segment(shop, 77)
    shopify_segment(other_shop, 88)
    form = builder_form(where(rule("shopify_segment", "in", "77")), name="Sneaky")
    key = next(k for k in form if k.endswith("-value"))
    form[key] = value
    before = Session.scalar(select(func.count()).select_from(Segment).execution_options(all_shops=True))
    for path in ("/segments/", "/segments/preview"):
        response = client.post(path, data=form, headers=auth)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        html = response.get_data(as_text=True)
        assert "Shopify segment" in html and "HX-Location" not in response.headers
    assert Session.scalar(select(func.count()).select_from(Segment).execution_options(all_shops=True)) == before


def test_the_preview_counts_a_shopify_segment(client, auth, shop):
    subscribers = people(shop, [101, 102, 103])
    assert subscribers
    shopify_segment(shop, 77, members=[101, 103])
    response = client.post("/segments/preview", data=builder_form(where(rule("shopify_segment", "in", "77"))),
                           headers=auth)
    assert 'id="segment-preview-count">2<' in response.get_data(as_text=True)


def test_the_rule_survives_the_rendered_builder_and_saves(client, auth, shop):
    from tests.test_segments_web import submitted
    shopify_segment(shop, 77, name="Big spenders")
    definition = where(rule("shopify_segment", "not_in", "77"), rule("country", "eq", "US"), match="any")
    mine = factories.segment(Session, shop, definition, name="Not big spenders")
    html = client.get(f"/segments/{mine.id}/edit", headers=auth).get_data(as_text=True)
    assert segment_form.parse_form(submitted(html)).definition == definition
    response = client.post(f"/segments/{mine.id}", data=submitted(html), headers=auth)
    assert "HX-Location" in response.headers
