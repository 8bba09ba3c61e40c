"""The segment compiler: every field and operator of the contract, against small explicit fixtures.

Each test builds the few rows it needs with the helpers below and asserts the exact member set.
`now` is always injected; nothing depends on the clock.
"""
from __future__ import annotations

import datetime as dt
import random
from functools import partial
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from bench import naive_segments
from tests import factories
from tests.conftest import make_shop
from tests.factories import rule, where
from tests.test_segment_rules import definitions  # the hypothesis strategy of valid definitions
from kinnekt.models import (Attribution, Campaign, Checkout, Click, CollectionProduct, Customer, CustomerTag, LineItem,
                            Link, Message, Order, Segment, SegmentMember, StaticList, StaticListEntry, Subscriber,
                            SubscriptionEvent)
from kinnekt.segments import DefinitionError, compile_definition, count, matches_subscriber, members
from kinnekt.segments.compiler import BUILDERS
from kinnekt.segments.rules import FIELDS

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)  # Sunday 12:00 in New York (EDT)


# ---------------------------------------------------------------------------------------------- fixtures

def at(text: str) -> dt.datetime:
    """An aware UTC instant from 'YYYY-MM-DDTHH:MM[:SS]' (read as UTC)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def add(db, row):
    db.add(row)
    db.flush()
    return row


# The rows of a test are flushed, not committed.
subscriber = partial(factories.subscriber, commit=False)
customer = partial(factories.customer, commit=False)
buyer = partial(factories.buyer, commit=False)


def order(db, shop, person, *, created_at=NOW - dt.timedelta(days=1), lines=(), **fields) -> Order:
    """An order of `person` (a customer), a day ago unless told, with line items given as dicts of LineItem fields."""
    return factories.order(db, shop, person, created_at=created_at, lines=lines, commit=False, **fields)


def message(db, shop, sub, *, status="delivered", sent_at=NOW - dt.timedelta(days=1)) -> Message:
    return add(db, Message(shop_id=shop.id, subscriber_id=sub.id, to_phone=sub.phone, status=status, sent_at=sent_at))


def click(db, shop, sub, *, when=NOW - dt.timedelta(days=1)) -> Click:
    link = add(db, Link(shop_id=shop.id, code=f"c{factories.serial()}", url="https://shop.example/p",
                        subscriber_id=sub.id))
    return add(db, Click(shop_id=shop.id, link_id=link.id, subscriber_id=sub.id, at=when))


def checkout(db, shop, person, *, started_at=NOW - dt.timedelta(days=1), completed_at=None) -> Checkout:
    return add(db, Checkout(shop_id=shop.id, token=f"t{factories.serial()}", customer_id=person.id,
                            started_at=started_at, completed_at=completed_at))


def subscription_event(db, shop, sub, *, kind="subscribed", when=NOW - dt.timedelta(days=1)) -> SubscriptionEvent:
    return add(db, SubscriptionEvent(shop_id=shop.id, subscriber_id=sub.id, kind=kind, at=when))


def segment(db, shop, definition, name=None) -> Segment:
    return factories.segment(db, shop, definition, name=name, kind="manual", commit=False)


def static_list(db, shop, phones) -> StaticList:
    row = add(db, StaticList(shop_id=shop.id, name=f"List {factories.serial()}", row_count=len(phones)))
    for phone in phones:
        add(db, StaticListEntry(shop_id=shop.id, list_id=row.id, phone=phone))
    return row


def ids(*subscribers) -> set[int]:
    return {s.id for s in subscribers}


def matching(db, shop, *rules, now=NOW, match="all") -> set[int]:
    """The member ids of a definition made of `rules`, checked against count and matches_subscriber too."""
    definition = where(*rules, match=match)
    found = members(db, definition, shop=shop, now=now)
    assert found == sorted(found)
    assert count(db, definition, shop=shop, now=now) == len(found)
    everyone = db.scalars(select(Subscriber.id).where(Subscriber.shop_id == shop.id)).all()
    assert {s for s in everyone if matches_subscriber(db, definition, shop=shop, now=now, subscriber_id=s)} \
        == set(found)
    return set(found)


ALWAYS = rule("subscription_source", "eq", "all")


# ---------------------------------------------------------------------------------------------- who is a member

def test_every_field_of_the_contract_has_a_builder():
    assert set(BUILDERS) == set(FIELDS)


def test_only_subscribed_unsuppressed_subscribers_of_the_shop_are_members(db, shop, other_shop):
    subscribed = subscriber(db, shop)
    subscriber(db, shop, status="pending")
    subscriber(db, shop, status="unsubscribed")
    subscriber(db, shop, suppressed_at=NOW - dt.timedelta(days=3))
    subscriber(db, other_shop)
    assert matching(db, shop, ALWAYS) == ids(subscribed)
    assert matching(db, shop, rule("subscription_source", "neq", "all")) == set()


def test_now_must_be_aware(db, shop):
    with pytest.raises(ValueError):
        compile_definition(where(ALWAYS), shop=shop, now=NOW.replace(tzinfo=None), session=db)


def test_compiled_select_nests_inside_another_query_over_subscribers(db, shop):
    first, second = subscriber(db, shop, country="US"), subscriber(db, shop, country="CA")
    audience = compile_definition(where(rule("country", "eq", "US")), shop=shop, now=NOW, session=db)
    nested = db.scalars(select(Subscriber.id).where(Subscriber.id.in_(audience))).all()
    assert nested == [first.id] and second.id not in nested


def test_groups_nest_with_all_and_any(db, shop):
    us_vip = subscriber(db, shop, country="US", keyword="VIP")
    us_plain = subscriber(db, shop, country="US")
    ca_vip = subscriber(db, shop, country="CA", keyword="VIP")
    subscriber(db, shop, country="FR")
    definition_rules = [rule("country", "in", ["US", "CA"]),
                        {"match": "any", "rules": [rule("keyword", "eq", "vip"), rule("country", "eq", "US")]}]
    assert matching(db, shop, *definition_rules) == ids(us_vip, us_plain, ca_vip)
    assert matching(db, shop, rule("keyword", "eq", "VIP"), rule("country", "eq", "CA"), match="any") \
        == ids(us_vip, ca_vip)


# ---------------------------------------------------------------------------------------------- money

def test_money_gt_and_gte_on_equal_amounts_with_cents(db, shop):
    at_25, _ = buyer(db, shop, money_spent=Decimal("25.00"), orders_count=1)
    at_25_01, _ = buyer(db, shop, money_spent=Decimal("25.01"), orders_count=1)
    at_24_99, _ = buyer(db, shop, money_spent=Decimal("24.99"), orders_count=1)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("money_spent", "gt", 25)) == ids(at_25_01)
    assert matching(db, shop, rule("money_spent", "gt", "25.00")) == ids(at_25_01)
    assert matching(db, shop, rule("money_spent", "gte", 25)) == ids(at_25, at_25_01)
    assert matching(db, shop, rule("money_spent", "gte", 25.01)) == ids(at_25_01)
    assert matching(db, shop, rule("money_spent", "eq", "25.00")) == ids(at_25)
    assert matching(db, shop, rule("money_spent", "neq", 25)) == ids(at_25_01, at_24_99, unlinked)
    assert matching(db, shop, rule("money_spent", "lt", 25)) == ids(at_24_99, unlinked)
    assert matching(db, shop, rule("money_spent", "lte", 25)) == ids(at_25, at_24_99, unlinked)
    assert matching(db, shop, rule("money_spent", "eq", 0)) == ids(unlinked)


def test_money_rules_treat_a_missing_amount_as_zero_in_every_form(db, shop):
    """Money rules are compiled on the bare column (so PostgreSQL can use its index), the missing amount of an
    unlinked subscriber decided by whether 0 meets the rule: it must then answer as a stored 0 does."""
    zero, _ = buyer(db, shop, money_spent=Decimal("0"), total_discounts=Decimal("0"))
    unlinked = subscriber(db, shop)
    for field in ("money_spent", "total_discounts"):
        for op, value, zero_matches in [("gt", 0, False), ("gte", 0, True), ("lt", 0, False), ("lte", 0, True),
                                        ("eq", 0, True), ("neq", 0, False), ("lt", 5, True), ("gte", "0.0001", False),
                                        ("between", ["-1", 1], True), ("between", [0, 1], False)]:
            found = matching(db, shop, rule(field, op, value))
            assert (zero.id in found, unlinked.id in found) == (zero_matches, zero_matches), (field, op, value)


def test_money_between_is_exclusive(db, shop):
    at_25, _ = buyer(db, shop, money_spent=Decimal("25.00"))
    at_25_01, _ = buyer(db, shop, money_spent=Decimal("25.01"))
    at_25_02, _ = buyer(db, shop, money_spent=Decimal("25.02"))
    assert matching(db, shop, rule("money_spent", "between", [25, "25.02"])) == ids(at_25_01)
    assert matching(db, shop, rule("money_spent", "between", ["25.00", 25.01])) == set()
    assert matching(db, shop, rule("money_spent", "between", [24.9999, 25.0201])) == ids(at_25, at_25_01, at_25_02)


def test_money_with_four_decimal_places_compares_exactly(db, shop):
    tiny, _ = buyer(db, shop, money_spent=Decimal("10.0001"))
    buyer(db, shop, money_spent=Decimal("10"))
    assert matching(db, shop, rule("money_spent", "gt", "10")) == ids(tiny)
    assert matching(db, shop, rule("money_spent", "eq", "10.0001")) == ids(tiny)


def test_total_discounts(db, shop):
    five, _ = buyer(db, shop, total_discounts=Decimal("5.00"))
    none_, _ = buyer(db, shop)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("total_discounts", "gte", 5)) == ids(five)
    assert matching(db, shop, rule("total_discounts", "lt", "0.01")) == ids(none_, unlinked)
    assert matching(db, shop, rule("total_discounts", "between", [4.99, 5.01])) == ids(five)


def test_average_money_spent_without_division(db, shop):
    avg_25, _ = buyer(db, shop, money_spent=Decimal("100.00"), orders_count=4)
    avg_25_0025, _ = buyer(db, shop, money_spent=Decimal("100.01"), orders_count=4)
    avg_third, _ = buyer(db, shop, money_spent=Decimal("100.00"), orders_count=3)  # 33.3333…
    no_orders, _ = buyer(db, shop)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("average_money_spent", "gt", 25)) == ids(avg_25_0025, avg_third)
    assert matching(db, shop, rule("average_money_spent", "gte", 25)) == ids(avg_25, avg_25_0025, avg_third)
    assert matching(db, shop, rule("average_money_spent", "eq", "25.00")) == ids(avg_25)
    assert matching(db, shop, rule("average_money_spent", "neq", 25)) \
        == ids(avg_25_0025, avg_third, no_orders, unlinked)
    assert matching(db, shop, rule("average_money_spent", "eq", "33.3333")) == set()
    assert matching(db, shop, rule("average_money_spent", "gt", "33.3333")) == ids(avg_third)
    assert matching(db, shop, rule("average_money_spent", "lt", "33.3334")) \
        == ids(avg_25, avg_25_0025, avg_third, no_orders, unlinked)
    assert matching(db, shop, rule("average_money_spent", "eq", 0)) == ids(no_orders, unlinked)
    assert matching(db, shop, rule("average_money_spent", "lte", 0)) == ids(no_orders, unlinked)
    assert matching(db, shop, rule("average_money_spent", "between", [25, 30])) == ids(avg_25_0025)
    assert matching(db, shop, rule("average_money_spent", "between", [-1, "0.01"])) == ids(no_orders, unlinked)


def test_average_money_spent_with_many_orders_does_not_overflow(db, shop):
    # 20000.00 × 50000 orders is far beyond a 32-bit integer once scaled to 1/10000 units.
    big, _ = buyer(db, shop, money_spent=Decimal("1000000000.00"), orders_count=50_000)
    assert matching(db, shop, rule("average_money_spent", "eq", 20000)) == ids(big)
    assert matching(db, shop, rule("average_money_spent", "gt", "19999.9999")) == ids(big)
    assert matching(db, shop, rule("average_money_spent", "gt", 20000)) == set()


# ---------------------------------------------------------------------------------------------- counts

@pytest.mark.parametrize("field,facts", [
    ("number_of_orders", lambda n: {"orders_count": n}),
    ("sent_count", lambda n: {"sent_count": n}),
    ("clicks_count", lambda n: {"clicks_count": n}),
])
def test_whole_number_fields_every_operator(db, shop, field, facts):
    def make(n):
        if field == "number_of_orders":
            return buyer(db, shop, **facts(n))[0]
        return subscriber(db, shop, **facts(n))

    zero, two, three, four = make(0), make(2), make(3), make(4)
    unlinked = subscriber(db, shop)  # no customer: 0 orders; counters default to 0
    assert matching(db, shop, rule(field, "eq", 3)) == ids(three)
    assert matching(db, shop, rule(field, "neq", 3)) == ids(zero, two, four, unlinked)
    assert matching(db, shop, rule(field, "lt", 3)) == ids(zero, two, unlinked)
    assert matching(db, shop, rule(field, "lte", 3)) == ids(zero, two, three, unlinked)
    assert matching(db, shop, rule(field, "gt", 3)) == ids(four)
    assert matching(db, shop, rule(field, "gte", 3)) == ids(three, four)
    assert matching(db, shop, rule(field, "between", [2, 4])) == ids(three)
    assert matching(db, shop, rule(field, "eq", 0)) == ids(zero, unlinked)
    assert matching(db, shop, rule(field, "eq", 3.0)) == ids(three)  # a whole JSON number


# ---------------------------------------------------------------------------------------------- dates

DATE_FIELDS = {
    "last_order_created": ("customer", "last_order_at"),
    "first_order_created": ("customer", "first_order_at"),
    "customer_created": ("customer", "shopify_created_at"),
    "subscribed_at": ("subscriber", "subscribed_at"),
    "last_received_sms": ("subscriber", "last_received_at"),
    "last_clicked": ("subscriber", "last_clicked_at"),
    "expected_next_order": ("customer", "expected_next_order_at"),
}


def dated(db, shop, field, when) -> Subscriber:
    """A subscriber whose `field` date is `when` (None: missing); customer dates go on a linked customer."""
    owner, column = DATE_FIELDS[field]
    if owner == "customer":
        return buyer(db, shop, **{column: when})[0]
    return subscriber(db, shop, **{column: when})


@pytest.mark.parametrize("field", sorted(DATE_FIELDS))
def test_each_date_field_reads_its_own_date(db, shop, field):
    recent = dated(db, shop, field, NOW - dt.timedelta(days=2))
    old = dated(db, shop, field, NOW - dt.timedelta(days=40))
    missing = dated(db, shop, field, None)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule(field, "within_last_days", 7)) == ids(recent)
    assert matching(db, shop, rule(field, "more_than_days_ago", 7)) == ids(old)
    assert matching(db, shop, rule(field, "never")) == ids(missing, unlinked)
    assert matching(db, shop, rule(field, "eq", "all_time")) == ids(recent, old)
    assert matching(db, shop, rule(field, "neq", "last_30_days")) == ids(old, missing, unlinked)


def test_within_last_days_and_more_than_days_ago_are_24_hour_steps_from_now(db, shop):
    cutoff = NOW - dt.timedelta(days=3)
    on_cutoff = subscriber(db, shop, subscribed_at=cutoff)
    just_before = subscriber(db, shop, subscribed_at=cutoff - dt.timedelta(microseconds=1))
    just_after = subscriber(db, shop, subscribed_at=cutoff + dt.timedelta(seconds=1))
    missing = subscriber(db, shop)
    assert matching(db, shop, rule("subscribed_at", "within_last_days", 3)) == ids(on_cutoff, just_after)
    assert matching(db, shop, rule("subscribed_at", "more_than_days_ago", 3)) == ids(just_before)
    assert missing.id not in matching(db, shop, rule("subscribed_at", "within_last_days", 36500))


def test_named_periods_in_new_york(db, shop):
    # NOW is Sunday 2026-03-15 12:00 EDT; local midnight is 04:00 UTC.
    today = subscriber(db, shop, subscribed_at=at("2026-03-15T04:00"))
    yesterday_last_second = subscriber(db, shop, subscribed_at=at("2026-03-15T03:59:59"))
    yesterday_start = subscriber(db, shop, subscribed_at=at("2026-03-14T04:00"))
    six_days_back = subscriber(db, shop, subscribed_at=at("2026-03-09T04:00"))  # Mar 9 00:00 EDT
    seven_days_back = subscriber(db, shop, subscribed_at=at("2026-03-09T03:59"))  # Mar 8 23:59 EDT
    day_29 = subscriber(db, shop, subscribed_at=at("2026-02-14T05:00"))  # Feb 14 00:00 EST
    day_30 = subscriber(db, shop, subscribed_at=at("2026-02-14T04:59"))  # Feb 13 23:59 EST
    day_89 = subscriber(db, shop, subscribed_at=at("2025-12-16T05:00"))  # Dec 16 00:00 EST
    day_90 = subscriber(db, shop, subscribed_at=at("2025-12-16T04:59"))
    never = subscriber(db, shop)
    everyone_dated = ids(today, yesterday_last_second, yesterday_start, six_days_back, seven_days_back, day_29,
                         day_30, day_89, day_90)

    def period(value):
        return matching(db, shop, rule("subscribed_at", "eq", value))

    assert period("today") == ids(today)
    assert period("yesterday") == ids(yesterday_last_second, yesterday_start)
    assert period("last_7_days") == ids(today, yesterday_last_second, yesterday_start, six_days_back)
    assert period("last_30_days") == everyone_dated - ids(day_30, day_89, day_90)
    assert period("last_90_days") == everyone_dated - ids(day_90)
    assert period("all_time") == everyone_dated
    assert matching(db, shop, rule("subscribed_at", "neq", "today")) == everyone_dated - ids(today) | ids(never)


def test_yesterday_across_the_spring_forward_in_new_york(db, shop):
    # 2026-03-08 is 23 hours long in New York: it starts 05:00 UTC (EST) and ends 04:00 UTC (EDT).
    now = at("2026-03-09T16:00")
    before_yesterday = subscriber(db, shop, subscribed_at=at("2026-03-08T04:59"))
    yesterday_first = subscriber(db, shop, subscribed_at=at("2026-03-08T05:00"))
    yesterday_last = subscriber(db, shop, subscribed_at=at("2026-03-09T03:59"))
    today_early = subscriber(db, shop, subscribed_at=at("2026-03-09T04:30"))  # 00:30 EDT
    assert matching(db, shop, rule("subscribed_at", "eq", "yesterday"), now=now) == ids(yesterday_first,
                                                                                         yesterday_last)
    assert matching(db, shop, rule("subscribed_at", "eq", "today"), now=now) == ids(today_early)
    # last_7_days from Monday Mar 9 starts Tuesday Mar 3 00:00 EST = 05:00 UTC, across the change.
    assert before_yesterday.id in matching(db, shop, rule("subscribed_at", "eq", "last_7_days"), now=now)
    week_edge = subscriber(db, shop, subscribed_at=at("2026-03-03T04:59"))
    assert week_edge.id not in matching(db, shop, rule("subscribed_at", "eq", "last_7_days"), now=now)


def test_today_and_yesterday_in_auckland_across_the_end_of_daylight_time(db):
    auckland = make_shop("kiwi.myshopify.com", timezone="Pacific/Auckland")
    # NZ daylight time ends 2026-04-05 03:00 NZDT: that day is 25 hours, 04-04T11:00Z to 04-05T12:00Z.
    now = at("2026-04-05T22:00")  # Monday 2026-04-06 10:00 NZST
    too_early = subscriber(db, auckland, subscribed_at=at("2026-04-04T10:59"))
    yesterday_first = subscriber(db, auckland, subscribed_at=at("2026-04-04T11:00"))
    yesterday_late = subscriber(db, auckland, subscribed_at=at("2026-04-05T11:30"))  # 23:30 NZST
    today_first = subscriber(db, auckland, subscribed_at=at("2026-04-05T12:00"))
    assert matching(db, auckland, rule("subscribed_at", "eq", "yesterday"), now=now) \
        == ids(yesterday_first, yesterday_late)
    assert matching(db, auckland, rule("subscribed_at", "eq", "today"), now=now) == ids(today_first)
    assert matching(db, auckland, rule("subscribed_at", "eq", "last_7_days"), now=now) \
        == ids(too_early, yesterday_first, yesterday_late, today_first)
    # Just before local midnight, "today" is still Sunday the 5th (and, per the contract, open-ended).
    sunday_night = at("2026-04-05T11:59")
    assert matching(db, auckland, rule("subscribed_at", "eq", "today"), now=sunday_night) \
        == ids(yesterday_first, yesterday_late, today_first)
    assert matching(db, auckland, rule("subscribed_at", "eq", "yesterday"), now=sunday_night) == ids(too_early)


def test_custom_period_includes_both_local_days(db):
    auckland = make_shop("kiwi.myshopify.com", timezone="Pacific/Auckland")
    # 2026-01-10 00:00 NZDT (+13) = 01-09T11:00Z; the end of 01-11 = 01-11T11:00Z.
    before_from = subscriber(db, auckland, subscribed_at=at("2026-01-09T10:59"))
    first = subscriber(db, auckland, subscribed_at=at("2026-01-09T11:00"))
    last = subscriber(db, auckland, subscribed_at=at("2026-01-11T10:59:59"))
    after_to = subscriber(db, auckland, subscribed_at=at("2026-01-11T11:00"))
    period = {"from": "2026-01-10", "to": "2026-01-11"}
    assert matching(db, auckland, rule("subscribed_at", "eq", period)) == ids(first, last)
    assert matching(db, auckland, rule("subscribed_at", "neq", period)) == ids(before_from, after_to)
    single_day = {"from": "2026-01-11", "to": "2026-01-11"}
    assert matching(db, auckland, rule("subscribed_at", "eq", single_day)) == ids(last)


def test_before_and_after_a_local_day(db, shop):
    # In New York 2026-03-10 runs from 04:00 UTC to 04:00 UTC the next day (EDT).
    day_before = subscriber(db, shop, subscribed_at=at("2026-03-10T03:59"))
    on_the_day = subscriber(db, shop, subscribed_at=at("2026-03-10T04:00"))
    end_of_day = subscriber(db, shop, subscribed_at=at("2026-03-11T03:59"))
    next_day = subscriber(db, shop, subscribed_at=at("2026-03-11T04:00"))
    subscriber(db, shop)  # no date: neither before nor after
    assert matching(db, shop, rule("subscribed_at", "before", "2026-03-10")) == ids(day_before)
    assert matching(db, shop, rule("subscribed_at", "after", "2026-03-10")) == ids(next_day)
    assert matching(db, shop, rule("subscribed_at", "after", "2026-03-09")) == ids(on_the_day, end_of_day, next_day)


def test_shop_without_time_zone_uses_utc(db):
    plain = make_shop("plain.myshopify.com", timezone="")
    late = subscriber(db, plain, subscribed_at=at("2026-03-15T00:00"))
    subscriber(db, plain, subscribed_at=at("2026-03-14T23:59"))
    assert matching(db, plain, rule("subscribed_at", "eq", "today")) == ids(late)


def test_customer_dates_of_unlinked_subscribers_are_missing(db, shop):
    unlinked = subscriber(db, shop)
    no_orders, _ = buyer(db, shop, shopify_created_at=NOW - dt.timedelta(days=5))
    assert matching(db, shop, rule("last_order_created", "never")) == ids(unlinked, no_orders)
    assert matching(db, shop, rule("customer_created", "never")) == ids(unlinked)
    assert matching(db, shop, rule("first_order_created", "neq", "all_time")) == ids(unlinked, no_orders)


# ---------------------------------------------------------------------------------------------- choices

@pytest.mark.parametrize("source", ["keyword", "mobile_popup", "shareable_link", "checkout", "import", "manual"])
def test_subscription_source(db, shop, source):
    people = {s: subscriber(db, shop, source=s) for s in
              ("keyword", "mobile_popup", "shareable_link", "checkout", "import", "manual")}
    assert matching(db, shop, rule("subscription_source", "eq", source)) == ids(people[source])
    assert matching(db, shop, rule("subscription_source", "neq", source)) \
        == ids(*people.values()) - ids(people[source])
    assert matching(db, shop, rule("subscription_source", "eq", "all")) == ids(*people.values())


def test_keyword_is_case_insensitive_and_neq_includes_no_keyword(db, shop):
    joined = subscriber(db, shop, source="keyword", keyword="SUMMER")
    other = subscriber(db, shop, source="keyword", keyword="WINTER")
    none_ = subscriber(db, shop)
    assert matching(db, shop, rule("keyword", "eq", "summer")) == ids(joined)
    assert matching(db, shop, rule("keyword", "neq", " Summer ")) == ids(other, none_)


def test_country_every_operator(db, shop):
    us, ca, fr = subscriber(db, shop, country="US"), subscriber(db, shop, country="CA"), subscriber(db, shop,
                                                                                                    country="FR")
    unknown = subscriber(db, shop)
    assert matching(db, shop, rule("country", "eq", "us")) == ids(us)
    assert matching(db, shop, rule("country", "neq", "US")) == ids(ca, fr, unknown)
    assert matching(db, shop, rule("country", "in", ["US", "CA"])) == ids(us, ca)
    assert matching(db, shop, rule("country", "not_in", ["US", "CA"])) == ids(fr, unknown)


def test_carrier_is_case_insensitive(db, shop):
    verizon = subscriber(db, shop, carrier="Verizon Wireless")
    tmobile = subscriber(db, shop, carrier="T-Mobile")
    unknown = subscriber(db, shop)
    assert matching(db, shop, rule("carrier", "eq", "VERIZON wireless")) == ids(verizon)
    assert matching(db, shop, rule("carrier", "neq", "verizon wireless")) == ids(tmobile, unknown)
    assert matching(db, shop, rule("carrier", "in", ["t-mobile", "Verizon Wireless"])) == ids(verizon, tmobile)
    assert matching(db, shop, rule("carrier", "not_in", ["T-MOBILE"])) == ids(verizon, unknown)


def test_city_trimmed_case_insensitive_and_neq_includes_unknown(db, shop):
    nyc, _ = buyer(db, shop, city="New York")
    boston, _ = buyer(db, shop, city="Boston")
    no_city, _ = buyer(db, shop)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("city", "eq", "  new YORK ")) == ids(nyc)
    assert matching(db, shop, rule("city", "neq", "New York")) == ids(boston, no_city, unlinked)


def test_case_insensitive_is_unicode_case_folding_on_both_databases(db, shop):
    """The contract: `ZÜRICH` equals `zürich`, `GRÖSSE` contains `größe` (str.casefold after trimming), for city,
    carrier, keyword, tags and titles; SQLite's lower() folds ASCII only and neither database folds ß to ss."""
    from sqlalchemy import insert
    from kinnekt.shopify.ingest.customers import normalised_tags
    zurich, person = buyer(db, shop, city="ZÜRICH", tags=sorted(normalised_tags(["Größe", "GROSSE"])))
    placed = order(db, shop, person, lines=[{"title": "GRÖSSE 42 Shirt", "variant_title": "ÆRØ Blau"}])
    big_city, _ = buyer(db, shop, city=" Großstadt ")
    texted = subscriber(db, shop, carrier="Telekom Straße", keyword="GRÜN", source="keyword")
    assert matching(db, shop, rule("city", "eq", "zürich")) == ids(zurich)
    assert matching(db, shop, rule("city", "eq", "GROSSSTADT")) == ids(big_city)
    assert matching(db, shop, rule("city", "neq", "Zürich")) == ids(big_city, texted)
    assert matching(db, shop, rule("carrier", "eq", "telekom strasse")) == ids(texted)
    assert matching(db, shop, rule("carrier", "in", ["TELEKOM STRASSE"])) == ids(texted)
    assert matching(db, shop, rule("keyword", "eq", "grün")) == ids(texted)
    assert matching(db, shop, rule("tags", "contains", "GRÖSSE")) == ids(zurich)
    assert matching(db, shop, rule("tags", "contains", "grosse")) == ids(zurich)
    title = lambda op, value, attribute="product_title": rule("line_items", op, value, attribute=attribute)  # noqa
    assert matching(db, shop, title("contains", "größe")) == ids(zurich)
    assert matching(db, shop, title("eq", "grösse 42 shirt")) == ids(zurich)
    assert matching(db, shop, title("contains", "ærø", "variant_title")) == ids(zurich)
    assert matching(db, shop, title("not_contains", "STRASSE")) == ids(zurich, big_city, texted)
    # The folded copies follow the ORM changing the text, and Core inserts fill them.
    person.city = "MÜNCHEN"
    db.flush()
    assert matching(db, shop, rule("city", "eq", "münchen")) == ids(zurich)
    db.execute(insert(LineItem), [{"shop_id": shop.id, "order_id": placed.id, "shopify_id": factories.serial(),
                                   "title": "Fußball", "customer_id": person.id, "counted": True}])
    assert matching(db, shop, title("eq", "FUSSBALL")) == ids(zurich)


def test_tags_are_case_insensitive_and_unlinked_subscribers_have_none(db, shop):
    vip, _ = buyer(db, shop, tags=["vip", "wholesale"])
    plain, _ = buyer(db, shop, tags=["wholesale"])
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("tags", "contains", "VIP")) == ids(vip)
    assert matching(db, shop, rule("tags", "not_contains", " Vip")) == ids(plain, unlinked)
    assert matching(db, shop, rule("tags", "contains", "whole")) == set()  # one whole tag, not a substring


# ---------------------------------------------------------------------------------------------- order states

def test_fulfillment_status_looks_at_every_non_test_order(db, shop):
    fulfilled, person = buyer(db, shop)
    order(db, shop, person, fulfillment_status="fulfilled")
    cancelled_partial, person = buyer(db, shop)
    order(db, shop, person, fulfillment_status="partially_fulfilled", cancelled_at=NOW - dt.timedelta(hours=2))
    test_only, person = buyer(db, shop)
    order(db, shop, person, fulfillment_status="fulfilled", test=True)
    open_order, person = buyer(db, shop)
    order(db, shop, person)  # unfulfilled by default
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("fulfillment_status", "eq", "fulfilled")) == ids(fulfilled)
    assert matching(db, shop, rule("fulfillment_status", "eq", "partially_fulfilled")) == ids(cancelled_partial)
    assert matching(db, shop, rule("fulfillment_status", "eq", "unfulfilled")) == ids(open_order)
    assert matching(db, shop, rule("fulfillment_status", "neq", "fulfilled")) \
        == ids(cancelled_partial, test_only, open_order, unlinked)


@pytest.mark.parametrize("status", ["pending", "authorized", "partially_paid", "expired"])
def test_unpaid_covers_four_shopify_statuses(db, shop, status):
    unpaid, person = buyer(db, shop)
    order(db, shop, person, financial_status=status)
    paid, person = buyer(db, shop)
    order(db, shop, person, financial_status="paid")
    assert matching(db, shop, rule("payment_status", "eq", "unpaid")) == ids(unpaid)
    assert matching(db, shop, rule("payment_status", "neq", "unpaid")) == ids(paid)


@pytest.mark.parametrize("status", ["authorized", "paid", "partially_refunded", "partially_paid", "pending",
                                    "refunded", "voided"])
def test_payment_status_each_value(db, shop, status):
    match, person = buyer(db, shop)
    order(db, shop, person, financial_status=status, cancelled_at=NOW)  # cancelled orders count here
    tested, person = buyer(db, shop)
    order(db, shop, person, financial_status=status, test=True)
    other, person = buyer(db, shop)
    order(db, shop, person, financial_status="paid" if status != "paid" else "refunded")
    assert matching(db, shop, rule("payment_status", "eq", status)) == ids(match)
    assert matching(db, shop, rule("payment_status", "neq", status)) == ids(tested, other)


def test_order_cancelled_yes_and_no(db, shop):
    cancelled, person = buyer(db, shop)
    order(db, shop, person, cancelled_at=NOW - dt.timedelta(days=1))
    order(db, shop, person)
    kept, person = buyer(db, shop)
    order(db, shop, person)
    test_cancelled, person = buyer(db, shop)
    order(db, shop, person, cancelled_at=NOW, test=True)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("order_cancelled", "eq", "yes")) == ids(cancelled)
    assert matching(db, shop, rule("order_cancelled", "eq", "no")) == ids(kept, test_cancelled, unlinked)


# ---------------------------------------------------------------------------------------------- purchases

def test_ordered_product_uses_counted_orders_only(db, shop):
    bought, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 111}, {"product_id": 222}])
    cancelled, person = buyer(db, shop)
    order(db, shop, person, cancelled_at=NOW, lines=[{"product_id": 111}])
    tested, person = buyer(db, shop)
    order(db, shop, person, test=True, lines=[{"product_id": 111}])
    other_product, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 333}])
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule("ordered_product", "eq", ["111"])) == ids(bought)
    assert matching(db, shop, rule("ordered_product", "eq", ["999", 333])) == ids(other_product)
    assert matching(db, shop, rule("ordered_product", "neq", ["111"])) \
        == ids(cancelled, tested, other_product, unlinked)


def test_ordered_collection_uses_current_collection_membership(db, shop):
    db.add_all([CollectionProduct(shop_id=shop.id, collection_id=70, product_id=111),
                CollectionProduct(shop_id=shop.id, collection_id=71, product_id=222)])
    in_collection, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 111}])
    left_collection, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 555}])  # 555 is no longer in collection 70
    other_collection, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 222}])
    cancelled, person = buyer(db, shop)
    order(db, shop, person, cancelled_at=NOW, lines=[{"product_id": 111}])
    assert matching(db, shop, rule("ordered_collection", "eq", ["70"])) == ids(in_collection)
    assert matching(db, shop, rule("ordered_collection", "eq", ["70", "71"])) == ids(in_collection, other_collection)
    assert matching(db, shop, rule("ordered_collection", "neq", ["70"])) \
        == ids(left_collection, other_collection, cancelled)
    db.add(CollectionProduct(shop_id=shop.id, collection_id=70, product_id=555))
    db.flush()
    assert matching(db, shop, rule("ordered_collection", "eq", ["70"])) == ids(in_collection, left_collection)


def test_line_items_product_and_variant_id(db, shop):
    first, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 1, "variant_id": 10}])
    second, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 2, "variant_id": 20}])
    tested, person = buyer(db, shop)
    order(db, shop, person, test=True, lines=[{"product_id": 1, "variant_id": 10}])
    li = lambda attr, op, value: rule("line_items", op, value, attribute=attr)  # noqa: E731
    assert matching(db, shop, li("product_id", "eq", "1")) == ids(first)
    assert matching(db, shop, li("product_id", "neq", 1)) == ids(second, tested)
    assert matching(db, shop, li("variant_id", "eq", "20")) == ids(second)
    assert matching(db, shop, li("variant_id", "neq", "20")) == ids(first, tested)


@pytest.mark.parametrize("attribute,column", [("product_title", "title"), ("variant_title", "variant_title")])
def test_line_items_titles(db, shop, attribute, column):
    shirt, person = buyer(db, shop)
    order(db, shop, person, lines=[{"title": "x", column: "Blue Shirt"}])
    sale, person = buyer(db, shop)
    order(db, shop, person, lines=[{"title": "x", column: "50% off Mug"}])
    plain, person = buyer(db, shop)
    order(db, shop, person, lines=[{"title": "x", column: "500 off Mug"}])
    li = lambda op, value: rule("line_items", op, value, attribute=attribute)  # noqa: E731
    assert matching(db, shop, li("eq", "blue SHIRT")) == ids(shirt)
    assert matching(db, shop, li("neq", "Blue Shirt")) == ids(sale, plain)
    assert matching(db, shop, li("contains", "SHIRT")) == ids(shirt)
    assert matching(db, shop, li("contains", "50%")) == ids(sale)  # LIKE wildcards are literal
    assert matching(db, shop, li("contains", "mug")) == ids(sale, plain)
    assert matching(db, shop, li("not_contains", "mug")) == ids(shirt)


def test_line_items_variant_title_missing_never_matches(db, shop):
    no_variant, person = buyer(db, shop)
    order(db, shop, person, lines=[{"title": "Gift card", "variant_title": None}])
    li = lambda op, value: rule("line_items", op, value, attribute="variant_title")  # noqa: E731
    assert matching(db, shop, li("contains", "a")) == set()
    assert matching(db, shop, li("not_contains", "a")) == ids(no_variant)


def test_line_items_quantity_and_price(db, shop):
    one_cheap, person = buyer(db, shop)
    order(db, shop, person, lines=[{"quantity": 1, "price": Decimal("25.00")}])
    three_dear, person = buyer(db, shop)
    order(db, shop, person, lines=[{"quantity": 3, "price": Decimal("25.01")}])
    cancelled, person = buyer(db, shop)
    order(db, shop, person, cancelled_at=NOW, lines=[{"quantity": 3, "price": Decimal("99")}])
    li = lambda attr, op, value: rule("line_items", op, value, attribute=attr)  # noqa: E731
    assert matching(db, shop, li("quantity", "eq", 3)) == ids(three_dear)
    assert matching(db, shop, li("quantity", "neq", 3)) == ids(one_cheap, cancelled)
    assert matching(db, shop, li("quantity", "gt", 1)) == ids(three_dear)
    assert matching(db, shop, li("quantity", "gte", 1)) == ids(one_cheap, three_dear)
    assert matching(db, shop, li("quantity", "lt", 3)) == ids(one_cheap)
    assert matching(db, shop, li("quantity", "lte", 3)) == ids(one_cheap, three_dear)
    assert matching(db, shop, li("price", "gt", 25)) == ids(three_dear)
    assert matching(db, shop, li("price", "gte", "25.00")) == ids(one_cheap, three_dear)
    assert matching(db, shop, li("price", "eq", 25.01)) == ids(three_dear)
    assert matching(db, shop, li("price", "neq", 25)) == ids(three_dear, cancelled)
    assert matching(db, shop, li("price", "lt", "25.01")) == ids(one_cheap)
    assert matching(db, shop, li("price", "lte", "25.01")) == ids(one_cheap, three_dear)


def test_line_item_rules_look_at_any_single_line(db, shop):
    mixed, person = buyer(db, shop)
    order(db, shop, person, lines=[{"quantity": 1}, {"quantity": 5}])
    li = lambda op, value: rule("line_items", op, value, attribute="quantity")  # noqa: E731
    assert matching(db, shop, li("eq", 5)) == ids(mixed)
    assert matching(db, shop, li("lt", 2)) == ids(mixed)
    assert matching(db, shop, li("neq", 5)) == set()  # "no such line item": there is one with 5


def test_line_item_quantity_takes_any_number(db, shop):
    """The contract: `quantity gte 2.5` is the same as `quantity gte 3`."""
    two, person = buyer(db, shop)
    order(db, shop, person, lines=[{"quantity": 2}])
    three, person = buyer(db, shop)
    order(db, shop, person, lines=[{"quantity": 3}])
    li = lambda op, value: rule("line_items", op, value, attribute="quantity")  # noqa: E731
    assert matching(db, shop, li("gte", 2.5)) == matching(db, shop, li("gte", 3)) == ids(three)
    assert matching(db, shop, li("gt", 2.5)) == ids(three)
    assert matching(db, shop, li("lte", 2.5)) == matching(db, shop, li("lt", 2.5)) == ids(two)
    assert matching(db, shop, li("lt", 3.0001)) == ids(two, three)
    assert matching(db, shop, li("eq", 2.5)) == set()
    assert matching(db, shop, li("neq", 2.5)) == ids(two, three)


def test_numbers_up_to_10_to_the_12_compare_without_overflow(db, shop):
    """Values up to 10^12 (the contract's example bound), also against many orders in `average_money_spent`."""
    many, _ = buyer(db, shop, money_spent=Decimal("5000000"), orders_count=10**6)  # 5 each
    rich, _ = buyer(db, shop, money_spent=Decimal("900000000000"), orders_count=1)
    assert matching(db, shop, rule("average_money_spent", "lt", 10**12)) == ids(many, rich)
    assert matching(db, shop, rule("average_money_spent", "gt", 10**12)) == set()
    assert matching(db, shop, rule("average_money_spent", "gt", -10**12)) == ids(many, rich)
    assert matching(db, shop, rule("average_money_spent", "between", [4, 10**12])) == ids(many, rich)
    assert matching(db, shop, rule("average_money_spent", "eq", 5)) == ids(many)
    assert matching(db, shop, rule("money_spent", "gte", "900000000000")) == ids(rich)


# ---------------------------------------------------------------------------------------------- events

def event(name, op="performed", **extras):
    return {"field": "event", "event": name, "op": op, **extras}


def test_placed_order_counts_counted_orders_inside_the_window(db, shop):
    twice, person = buyer(db, shop)
    order(db, shop, person, created_at=NOW - dt.timedelta(days=2))
    order(db, shop, person, created_at=NOW - dt.timedelta(days=20))
    once, person = buyer(db, shop)
    order(db, shop, person, created_at=NOW - dt.timedelta(days=2))
    order(db, shop, person, created_at=NOW - dt.timedelta(days=3), cancelled_at=NOW)
    order(db, shop, person, created_at=NOW - dt.timedelta(days=3), test=True)
    long_ago, person = buyer(db, shop)
    order(db, shop, person, created_at=NOW - dt.timedelta(days=100))
    order(db, shop, person, created_at=NOW - dt.timedelta(days=200))
    never = subscriber(db, shop)
    assert matching(db, shop, event("placed_order")) == ids(twice, once, long_ago)
    assert matching(db, shop, event("placed_order", at_least=2)) == ids(twice, long_ago)
    assert matching(db, shop, event("placed_order", within="last_30_days", at_least=2)) == ids(twice)
    assert matching(db, shop, event("placed_order", within="last_7_days")) == ids(twice, once)
    assert matching(db, shop, event("placed_order", "not_performed")) == ids(never)
    assert matching(db, shop, event("placed_order", "not_performed", within="last_30_days")) == ids(long_ago, never)
    assert matching(db, shop, event("placed_order", "not_performed", within="last_30_days", at_least=2)) \
        == ids(once, long_ago, never)


def test_event_window_last_days_runs_from_now_minus_n_days_to_now(db, shop):
    on_start = subscriber(db, shop)
    subscription_event(db, shop, on_start, when=NOW - dt.timedelta(days=2))
    before_start = subscriber(db, shop)
    subscription_event(db, shop, before_start, when=NOW - dt.timedelta(days=2, microseconds=1))
    at_now = subscriber(db, shop)
    subscription_event(db, shop, at_now, when=NOW)
    future = subscriber(db, shop)
    subscription_event(db, shop, future, when=NOW + dt.timedelta(seconds=1))
    window = {"last_days": 2}
    assert matching(db, shop, event("subscribed", within=window)) == ids(on_start, at_now)
    assert matching(db, shop, event("subscribed", "not_performed", within=window)) == ids(before_start, future)


def test_event_window_custom_period(db, shop):
    inside = subscriber(db, shop)
    click(db, shop, inside, when=at("2026-03-01T05:00"))  # Mar 1 00:00 EST
    outside = subscriber(db, shop)
    click(db, shop, outside, when=at("2026-03-01T04:59"))
    window = {"from": "2026-03-01", "to": "2026-03-02"}
    assert matching(db, shop, event("clicked_link", within=window)) == ids(inside)


def test_received_sms_counts_messages_the_provider_accepted(db, shop):
    delivered = subscriber(db, shop)
    message(db, shop, delivered, status="delivered")
    sent_twice = subscriber(db, shop)
    message(db, shop, sent_twice, status="sent")
    message(db, shop, sent_twice, status="sent", sent_at=NOW - dt.timedelta(days=40))
    failed = subscriber(db, shop)
    message(db, shop, failed, status="failed")
    message(db, shop, failed, status="pending", sent_at=None)
    assert matching(db, shop, event("received_sms")) == ids(delivered, sent_twice)
    assert matching(db, shop, event("received_sms", at_least=2)) == ids(sent_twice)
    assert matching(db, shop, event("received_sms", at_least=2, within="last_30_days")) == set()
    assert matching(db, shop, event("received_sms", "not_performed")) == ids(failed)


def discount_campaign(db, shop, *, mode="unique", code="SPRING", body="Take 10% off: {discount_code}") -> Campaign:
    return add(db, Campaign(shop_id=shop.id, name=f"Campaign {factories.serial()}", body=body, status="completed",
                            discount_mode=mode, discount_code=code if mode != "none" else None))


def campaign_message(db, shop, sub, campaign, *, code=None, status="delivered", sent_at=NOW - dt.timedelta(days=1)):
    return add(db, Message(shop_id=shop.id, campaign_id=campaign.id, subscriber_id=sub.id, to_phone=sub.phone,
                           status=status, sent_at=sent_at, discount_code=code))


def test_received_discount_counts_received_messages_that_carried_a_code(db, shop):
    unique = discount_campaign(db, shop, mode="unique", code="VIP")
    shared = discount_campaign(db, shop, mode="shared", code="SPRING10")
    plain = discount_campaign(db, shop, mode="none")
    untagged = discount_campaign(db, shop, mode="shared", code="QUIET", body="A discount, but no code in the text")
    shouted = discount_campaign(db, shop, mode="shared", code="LOUD", body="Not our tag: {DISCOUNT_CODE}")
    got_unique = subscriber(db, shop)
    campaign_message(db, shop, got_unique, unique, code="VIP-7KQ2-XM4P", status="delivered")
    got_shared = subscriber(db, shop)
    campaign_message(db, shop, got_shared, shared, status="sent", sent_at=NOW - dt.timedelta(days=10))
    twice = subscriber(db, shop)
    campaign_message(db, shop, twice, shared, status="delivered", sent_at=NOW - dt.timedelta(days=2))
    campaign_message(db, shop, twice, unique, code="VIP-AAAA-BBBB", status="sent", sent_at=NOW - dt.timedelta(days=3))
    failed = subscriber(db, shop)
    campaign_message(db, shop, failed, unique, code="VIP-CCCC-DDDD", status="failed")
    campaign_message(db, shop, failed, shared, status="pending", sent_at=None)
    no_code = subscriber(db, shop)
    campaign_message(db, shop, no_code, plain)
    campaign_message(db, shop, no_code, unique, code=None)  # a unique campaign's row whose code was never made
    campaign_message(db, shop, no_code, untagged)
    campaign_message(db, shop, no_code, shouted)
    message(db, shop, no_code)  # a reply, no campaign
    assert matching(db, shop, event("received_discount")) == ids(got_unique, got_shared, twice)
    assert matching(db, shop, event("received_discount", within={"last_days": 7})) == ids(got_unique, twice)
    assert matching(db, shop, event("received_discount", at_least=2)) == ids(twice)
    assert matching(db, shop, event("received_discount", "not_performed")) == ids(failed, no_code)
    assert matching(db, shop, event("received_discount", "not_performed", within="last_7_days")) \
        == ids(got_shared, failed, no_code)


def attributed(db, shop, sub, campaign, *, method="discount_code", created_at=NOW - dt.timedelta(days=1), **fields):
    """An order of the subscriber's customer credited to `campaign` (and to `sub`) by `method`."""
    person = db.get(Customer, sub.customer_id) if sub.customer_id else customer(db, shop)
    placed = order(db, shop, person, created_at=created_at, **fields)
    return add(db, Attribution(shop_id=shop.id, order_id=placed.id, campaign_id=campaign.id, subscriber_id=sub.id,
                               method=method, revenue=Decimal("10")))


def test_used_discount_counts_orders_credited_to_the_subscriber_by_a_code(db, shop):
    campaign = discount_campaign(db, shop)
    used, _ = buyer(db, shop)
    attributed(db, shop, used, campaign, created_at=NOW - dt.timedelta(days=2))
    used_long_ago, _ = buyer(db, shop)
    attributed(db, shop, used_long_ago, campaign, created_at=NOW - dt.timedelta(days=40))
    clicked, _ = buyer(db, shop)
    attributed(db, shop, clicked, campaign, method="click")
    cancelled, _ = buyer(db, shop)
    attributed(db, shop, cancelled, campaign, cancelled_at=NOW - dt.timedelta(hours=2))
    nobody = subscriber(db, shop)
    assert matching(db, shop, event("used_discount")) == ids(used, used_long_ago)
    assert matching(db, shop, event("used_discount", within="last_30_days")) == ids(used)
    assert matching(db, shop, event("used_discount", "not_performed")) == ids(clicked, cancelled, nobody)


def test_got_a_code_and_did_not_use_it_within_7_days_is_one_segment(db, shop):
    campaign = discount_campaign(db, shop)
    ignored, _ = buyer(db, shop)
    campaign_message(db, shop, ignored, campaign, code="A-1", sent_at=NOW - dt.timedelta(days=3))
    redeemed, _ = buyer(db, shop)
    campaign_message(db, shop, redeemed, campaign, code="A-2", sent_at=NOW - dt.timedelta(days=3))
    attributed(db, shop, redeemed, campaign, created_at=NOW - dt.timedelta(days=1))
    long_ago, _ = buyer(db, shop)
    campaign_message(db, shop, long_ago, campaign, code="A-3", sent_at=NOW - dt.timedelta(days=30))
    subscriber(db, shop)
    got_not_used = [event("received_discount", within={"last_days": 7}),
                    event("used_discount", "not_performed", within={"last_days": 7})]
    assert matching(db, shop, *got_not_used) == ids(ignored)
    naive = naive_segments.load(db, shop.id)
    assert both_shapes(db, shop, where(*got_not_used), naive) == ids(ignored)
    everyone = set(members(db, where(ALWAYS), shop=shop, now=NOW))
    assert both_shapes(db, shop, where(*got_not_used, match="any"), naive) == everyone  # redeemed: got one
    assert both_shapes(db, shop, where(got_not_used[0], event("used_discount"), match="any"), naive) \
        == ids(ignored, redeemed)


# ---------------------------------------------------------------------------------------------- lifecycle

@pytest.mark.parametrize("field,column", [("lifecycle_stage", "lifecycle_stage"),
                                          ("previous_lifecycle_stage", "lifecycle_previous_stage")])
def test_lifecycle_stage_fields_every_operator(db, shop, field, column):
    loyal, _ = buyer(db, shop, **{column: "loyal"})
    dormant, _ = buyer(db, shop, **{column: "dormant"})
    churned, _ = buyer(db, shop, **{column: "churned"})
    no_stage, _ = buyer(db, shop)
    unlinked = subscriber(db, shop)
    assert matching(db, shop, rule(field, "eq", "dormant")) == ids(dormant)
    assert matching(db, shop, rule(field, "neq", "dormant")) == ids(loyal, churned, no_stage, unlinked)
    assert matching(db, shop, rule(field, "in", ["dormant", "churned"])) == ids(dormant, churned)
    assert matching(db, shop, rule(field, "not_in", ["dormant", "churned"])) == ids(loyal, no_stage, unlinked)
    naive = naive_segments.load(db, shop.id)
    for op, value in (("eq", "loyal"), ("not_in", ["loyal", "high_potential"])):
        assert set(naive_segments.members(naive, where(rule(field, op, value)), now=NOW)) \
            == matching(db, shop, rule(field, op, value))


def test_was_loyal_now_dormant(db, shop):
    slipping, _ = buyer(db, shop, lifecycle_stage="dormant", lifecycle_previous_stage="loyal")
    buyer(db, shop, lifecycle_stage="dormant", lifecycle_previous_stage="nurture_needed")
    buyer(db, shop, lifecycle_stage="loyal", lifecycle_previous_stage="dormant")
    assert matching(db, shop, rule("lifecycle_stage", "eq", "dormant"),
                    rule("previous_lifecycle_stage", "eq", "loyal")) == ids(slipping)


def test_clicked_link_counts_clicks(db, shop):
    clicker = subscriber(db, shop)
    for days in (1, 2, 3):
        click(db, shop, clicker, when=NOW - dt.timedelta(days=days))
    once = subscriber(db, shop)
    click(db, shop, once, when=NOW - dt.timedelta(hours=1))
    nobody = subscriber(db, shop)
    assert matching(db, shop, event("clicked_link", at_least=3)) == ids(clicker)
    assert matching(db, shop, event("clicked_link", within="today")) == ids(once)
    assert matching(db, shop, event("clicked_link", within="yesterday")) == ids(clicker)
    assert matching(db, shop, event("clicked_link", "not_performed", at_least=3)) == ids(once, nobody)


def test_started_checkout_counts_checkouts_not_completed(db, shop):
    abandoned, person = buyer(db, shop)
    checkout(db, shop, person, started_at=NOW - dt.timedelta(hours=30))
    completed, person = buyer(db, shop)
    checkout(db, shop, person, completed_at=NOW - dt.timedelta(hours=20))
    unlinked = subscriber(db, shop)
    assert matching(db, shop, event("started_checkout")) == ids(abandoned)
    assert matching(db, shop, event("started_checkout", within={"last_days": 1})) == set()
    assert matching(db, shop, event("started_checkout", within={"last_days": 2})) == ids(abandoned)
    assert matching(db, shop, event("started_checkout", "not_performed")) == ids(completed, unlinked)


def test_subscribed_event_counts_every_moment_of_becoming_subscribed(db, shop, settled_jobs):
    """The contract: the first subscription, a double opt-in's confirmation (at the confirmation) and every
    resubscription are `subscribed` events; a sign-up never confirmed is not. Written by the real opt-in code."""
    from kinnekt.db import utcnow
    from kinnekt.subscribers import optin
    direct = optin.subscribe(db, shop, "+12125550141", source="manual", consent_text="Said yes at the till")
    confirmed = optin.subscribe(db, shop, "+12125550142", source="keyword", keyword="JOIN", consent_text="JOIN",
                                double_opt_in=True, send_confirmation=False)
    optin.confirm(db, confirmed)
    never_confirmed = optin.subscribe(db, shop, "+12125550143", source="keyword", keyword="JOIN",
                                      consent_text="JOIN", double_opt_in=True, send_confirmation=False)
    came_back = optin.subscribe(db, shop, "+12125550144", source="manual", consent_text="Said yes")
    optin.unsubscribe(db, came_back, reason="STOP", source="sms")
    optin.resubscribe(db, came_back, source="sms", detail="texted START")
    later = utcnow() + dt.timedelta(minutes=1)
    assert matching(db, shop, event("subscribed"), now=later) == ids(direct, confirmed, came_back)
    assert matching(db, shop, event("subscribed", at_least=2), now=later) == ids(came_back)
    assert matching(db, shop, event("subscribed", "not_performed"), now=later) == set()  # members all subscribed
    optin.unsubscribe(db, never_confirmed, reason="x", source="merchant")
    optin.resubscribe(db, never_confirmed, source="merchant", detail="attested")
    assert matching(db, shop, event("subscribed", at_least=2), now=later) == ids(came_back)
    assert matching(db, shop, event("subscribed"), now=later) == ids(direct, confirmed, came_back, never_confirmed)


def test_subscribed_event_is_at_the_confirmation_not_the_sign_up(db, shop):
    pending_long_ago = subscriber(db, shop)
    subscription_event(db, shop, pending_long_ago, kind="pending", when=NOW - dt.timedelta(days=40))
    subscription_event(db, shop, pending_long_ago, kind="confirmed", when=NOW - dt.timedelta(days=2))
    resubscribed = subscriber(db, shop)
    subscription_event(db, shop, resubscribed, when=NOW - dt.timedelta(days=50))
    subscription_event(db, shop, resubscribed, kind="unsubscribed", when=NOW - dt.timedelta(days=40))
    subscription_event(db, shop, resubscribed, kind="resubscribed", when=NOW - dt.timedelta(days=5))
    once = subscriber(db, shop)
    subscription_event(db, shop, once, when=NOW - dt.timedelta(days=20))
    subscription_event(db, shop, once, kind="consent", when=NOW - dt.timedelta(days=1))
    assert matching(db, shop, event("subscribed", at_least=2)) == ids(resubscribed)
    assert matching(db, shop, event("subscribed", within="last_7_days")) == ids(resubscribed, pending_long_ago)
    assert matching(db, shop, event("subscribed", within={"last_days": 30}, at_least=1)) \
        == ids(resubscribed, pending_long_ago, once)
    assert matching(db, shop, event("subscribed", "not_performed", within="last_90_days", at_least=2)) \
        == ids(once, pending_long_ago)


def test_started_checkout_links_a_checkout_without_customer_by_phone(db, shop):
    by_phone = subscriber(db, shop, phone="+12125550151")
    add(db, Checkout(shop_id=shop.id, token="nocust1", customer_id=None, phone="+12125550151",
                     started_at=NOW - dt.timedelta(hours=5)))
    add(db, Checkout(shop_id=shop.id, token="nocust2", customer_id=None, phone="+12125550151",
                     started_at=NOW - dt.timedelta(days=3)))
    # A checkout with a customer is that customer's, whatever its phone says.
    linked, person = buyer(db, shop)
    add(db, Checkout(shop_id=shop.id, token="cust", customer_id=person.id, phone="+12125550152",
                     started_at=NOW - dt.timedelta(hours=5)))
    phone_of_other = subscriber(db, shop, phone="+12125550152")
    completed = subscriber(db, shop, phone="+12125550153")
    add(db, Checkout(shop_id=shop.id, token="done", customer_id=None, phone="+12125550153",
                     started_at=NOW - dt.timedelta(hours=5), completed_at=NOW - dt.timedelta(hours=4)))
    assert matching(db, shop, event("started_checkout")) == ids(by_phone, linked)
    assert matching(db, shop, event("started_checkout", at_least=2)) == ids(by_phone)
    assert matching(db, shop, event("started_checkout", within={"last_days": 1})) == ids(by_phone, linked)
    assert matching(db, shop, event("started_checkout", "not_performed")) == ids(phone_of_other, completed)
    assert matching(db, shop, event("started_checkout"), event("placed_order", "not_performed"),
                    match="any") == ids(by_phone, linked, phone_of_other, completed)


# ---------------------------------------------------------------------------------------------- segments and lists

def test_segment_rule_evaluates_the_referenced_definition_with_the_same_now(db, shop):
    recent = subscriber(db, shop, subscribed_at=NOW - dt.timedelta(days=2))
    older = subscriber(db, shop, subscribed_at=NOW - dt.timedelta(days=10))
    newcomers = segment(db, shop, where(rule("subscribed_at", "within_last_days", 7)))
    # Stale materialised members must not matter: the definition is evaluated, not the member rows.
    add(db, SegmentMember(shop_id=shop.id, segment_id=newcomers.id, subscriber_id=older.id))
    assert matching(db, shop, rule("segment", "in", newcomers.id)) == ids(recent)
    assert matching(db, shop, rule("segment", "not_in", newcomers.id)) == ids(older)
    later = NOW + dt.timedelta(days=6)
    assert matching(db, shop, rule("segment", "in", newcomers.id), now=later) == set()
    assert matching(db, shop, rule("segment", "not_in", newcomers.id), now=later) == ids(recent, older)


def test_segment_not_in_is_true_where_the_other_segment_has_missing_values(db, shop):
    parisian, _ = buyer(db, shop, city="Paris")
    elsewhere, _ = buyer(db, shop, city="Lyon")
    unlinked = subscriber(db, shop)
    parisians = segment(db, shop, where(rule("city", "eq", "paris"), rule("tags", "not_contains", "x")))
    assert matching(db, shop, rule("segment", "not_in", parisians.id)) == ids(elsewhere, unlinked)
    assert matching(db, shop, rule("segment", "in", parisians.id)) == ids(parisian)


def test_segment_rules_nest_through_several_segments(db, shop):
    us_recent = subscriber(db, shop, country="US", subscribed_at=NOW - dt.timedelta(days=1))
    subscriber(db, shop, country="US", subscribed_at=NOW - dt.timedelta(days=30))
    subscriber(db, shop, country="CA", subscribed_at=NOW - dt.timedelta(days=1))
    americans = segment(db, shop, where(rule("country", "eq", "US")))
    new_americans = segment(db, shop, where(rule("segment", "in", americans.id),
                                            rule("subscribed_at", "within_last_days", 7)))
    assert matching(db, shop, rule("segment", "in", new_americans.id)) == ids(us_recent)


def test_deleted_or_foreign_segment_has_no_members(db, shop, other_shop):
    person = subscriber(db, shop)
    theirs = segment(db, other_shop, where(ALWAYS))
    assert matching(db, shop, rule("segment", "in", theirs.id)) == set()
    assert matching(db, shop, rule("segment", "not_in", theirs.id)) == ids(person)
    assert matching(db, shop, rule("segment", "in", 999_999)) == set()


def test_loop_of_stored_segments_is_refused_at_compile_time(db, shop):
    subscriber(db, shop)
    first = segment(db, shop, where(ALWAYS))
    second = segment(db, shop, where(rule("segment", "in", first.id)))
    first.definition = where(rule("segment", "in", second.id))
    db.flush()
    with pytest.raises(DefinitionError):
        members(db, where(rule("segment", "in", first.id)), shop=shop, now=NOW)


def test_list_membership_by_phone(db, shop, other_shop):
    listed = subscriber(db, shop, phone="+12125550001")
    unlisted = subscriber(db, shop, phone="+12125550002")
    vip_list = static_list(db, shop, ["+12125550001", "+12125559999"])
    theirs = static_list(db, other_shop, ["+12125550002"])
    assert matching(db, shop, rule("list", "in", vip_list.id)) == ids(listed)
    assert matching(db, shop, rule("list", "not_in", vip_list.id)) == ids(unlisted)
    assert matching(db, shop, rule("list", "in", theirs.id)) == set()


# ---------------------------------------------------------------------------------------------- tenant isolation

def test_another_shops_rows_never_match(db, shop, other_shop):
    """Rows of another shop that (wrongly) point at our subscriber or customer are never seen."""
    mine, person = buyer(db, shop)
    # Another shop's order, checkout, click and subscription event, all pointing at our rows.
    foreign_order = add(db, Order(shop_id=other_shop.id, shopify_id=1, customer_id=person.id, created_at=NOW,
                                  financial_status="paid", fulfillment_status="fulfilled", cancelled_at=NOW))
    add(db, LineItem(shop_id=other_shop.id, order_id=foreign_order.id, shopify_id=2, product_id=111,
                     title="Shirt"))
    add(db, CollectionProduct(shop_id=other_shop.id, collection_id=70, product_id=111))
    add(db, Checkout(shop_id=other_shop.id, token="x", customer_id=person.id, started_at=NOW))
    link = add(db, Link(shop_id=other_shop.id, code="zz", url="https://x", subscriber_id=mine.id))
    add(db, Click(shop_id=other_shop.id, link_id=link.id, subscriber_id=mine.id, at=NOW))
    # (A message of another shop cannot name our subscriber: the database refuses it, test_subscriber_key.py.)
    add(db, SubscriptionEvent(shop_id=other_shop.id, subscriber_id=mine.id, kind="subscribed", at=NOW))
    add(db, CustomerTag(shop_id=other_shop.id, customer_id=person.id, tag="vip"))
    their_list = static_list(db, other_shop, [mine.phone])
    for positive in [
        rule("ordered_product", "eq", ["111"]),
        rule("line_items", "contains", "shirt", attribute="product_title"),
        rule("payment_status", "eq", "paid"),
        rule("fulfillment_status", "eq", "fulfilled"),
        rule("order_cancelled", "eq", "yes"),
        rule("tags", "contains", "vip"),
        rule("list", "in", their_list.id),
        *(event(name) for name in ("placed_order", "received_sms", "clicked_link", "started_checkout",
                                   "subscribed")),
    ]:
        assert matching(db, shop, positive) == set(), positive


def test_our_collection_ids_do_not_use_another_shops_collections(db, shop, other_shop):
    mine, person = buyer(db, shop)
    order(db, shop, person, lines=[{"product_id": 111}])
    add(db, CollectionProduct(shop_id=other_shop.id, collection_id=70, product_id=111))
    assert matching(db, shop, rule("ordered_collection", "eq", ["70"])) == set()
    add(db, CollectionProduct(shop_id=shop.id, collection_id=70, product_id=111))
    assert matching(db, shop, rule("ordered_collection", "eq", ["70"])) == ids(mine)


def test_customer_of_another_shop_is_not_linked(db, shop, other_shop):
    foreign = customer(db, other_shop, money_spent=Decimal("500"), orders_count=3, city="Paris", tags=["vip"])
    odd = subscriber(db, shop, customer=foreign)
    assert matching(db, shop, rule("money_spent", "gt", 0)) == set()
    assert matching(db, shop, rule("number_of_orders", "eq", 0)) == ids(odd)
    assert matching(db, shop, rule("city", "eq", "paris")) == set()


# ---------------------------------------------------------------------------------------------- edges of time

def test_periods_and_day_counts_at_the_edges_of_the_calendar(db):
    auckland = make_shop("kiwi.myshopify.com", timezone="Pacific/Auckland")
    dated_sub = subscriber(db, auckland, subscribed_at=NOW - dt.timedelta(days=400))
    subscriber(db, auckland)
    everything = {"from": "0001-01-01", "to": "9999-12-31"}
    assert matching(db, auckland, rule("subscribed_at", "eq", everything)) == ids(dated_sub)
    assert matching(db, auckland, rule("subscribed_at", "before", "0001-01-01")) == set()
    assert matching(db, auckland, rule("subscribed_at", "after", "9999-12-31")) == set()
    assert matching(db, auckland, rule("subscribed_at", "within_last_days", 999_999_999)) == ids(dated_sub)
    assert matching(db, auckland, rule("subscribed_at", "more_than_days_ago", 999_999_999)) == set()
    window = {"last_days": 999_999_999}
    subscription_event(db, auckland, dated_sub, when=NOW - dt.timedelta(days=400))
    assert matching(db, auckland, event("subscribed", within=window)) == ids(dated_sub)


def test_a_day_that_starts_after_a_midnight_gap_starts_at_the_transition():
    from kinnekt.segments.periods import day_start, shop_zone
    havana = shop_zone("America/Havana")  # 2024-03-10: clocks jump from 00:00 to 01:00
    assert day_start(dt.date(2024, 3, 10), havana) == at("2024-03-10T05:00")
    assert day_start(dt.date(2024, 3, 11), havana) == at("2024-03-11T04:00")


# ---------------------------------------------------------------------------------------------- properties

@pytest.fixture
def varied_shop(db, shop):
    """A shop whose subscribers cover missing values, linked customers with orders, events and lists."""
    plain = subscriber(db, shop)
    subscriber(db, shop, status="pending", country="US")
    subscriber(db, shop, suppressed_at=NOW, country="US")
    empty_customer, _ = buyer(db, shop)
    rich, person = buyer(db, shop, money_spent=Decimal("120.50"), orders_count=3, total_discounts=Decimal("4"),
                         city="Boston", first_order_at=NOW - dt.timedelta(days=90),
                         last_order_at=NOW - dt.timedelta(days=3), shopify_created_at=NOW - dt.timedelta(days=100),
                         tags=["vip"])
    rich.country, rich.carrier, rich.keyword, rich.source = "US", "Verizon", "SUMMER", "keyword"
    rich.subscribed_at, rich.last_clicked_at = NOW - dt.timedelta(days=20), NOW - dt.timedelta(hours=5)
    rich.sent_count, rich.clicks_count = 4, 2
    order(db, shop, person, financial_status="paid", fulfillment_status="fulfilled",
          lines=[{"product_id": 1, "variant_id": 2, "title": "Shirt", "variant_title": "Blue", "quantity": 2,
                  "price": Decimal("20")}])
    order(db, shop, person, cancelled_at=NOW, financial_status="voided")
    checkout(db, shop, person)
    click(db, shop, rich)
    message(db, shop, rich)
    subscription_event(db, shop, rich)
    add(db, CollectionProduct(shop_id=shop.id, collection_id=5, product_id=1))
    from kinnekt.subscribers import properties
    properties.set_values(db, rich, {"birthday": "1990-03-15", "language": "Deutsch"})
    properties.set_values(db, plain, {"birthday": "2000-02-29"})
    lists = [static_list(db, shop, [rich.phone]).id, static_list(db, shop, [plain.phone]).id]
    segments = [segment(db, shop, where(rule("country", "eq", "US"))).id,
                segment(db, shop, where(rule("city", "neq", "boston"))).id]
    under_test = segment(db, shop, where(ALWAYS))
    marketable = ids(plain, empty_customer, rich)
    return shop, segments, lists, under_test, marketable


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_valid_definition_compiles_and_its_negation_is_its_complement(db, varied_shop, data):
    """`segment not_in` is exactly the complement of `segment in`: no predicate lets NULL leak through."""
    shop, segments, lists, under_test, marketable = varied_shop
    definition = data.draw(definitions(segments, lists))
    under_test.definition = definition
    db.flush()
    inside = set(members(db, definition, shop=shop, now=NOW))
    assert set(members(db, where(rule("segment", "in", under_test.id)), shop=shop, now=NOW)) == inside
    outside = set(members(db, where(rule("segment", "not_in", under_test.id)), shop=shop, now=NOW))
    assert inside.isdisjoint(outside)
    assert inside | outside == marketable


# ---------------------------------------------------------------------------------------------- the two shapes

ORDER_LEVEL_FIELDS = ("tags", "fulfillment_status", "payment_status", "order_cancelled", "ordered_product",
                      "ordered_collection", "line_items", "event", "list")
"""Fields whose rules read rows of their own (orders, line items, events, tags, list entries): the ones that
the SET and PROBE shapes write differently."""

PRODUCTS, VARIANTS, COLLECTIONS = (1, 2, 3, 4, 5, 6), (11, 12, 13), (50, 51, 52, 99)
TITLES, VARIANT_TITLES = ("Shirt", "Blue Hoodie", "cap", "Hoodie 100%"), (None, "S", "Large", "blue")
PRICES = (Decimal("5"), Decimal("20"), Decimal("20.5"), Decimal("100"))


def random_shop(db, shop, rng) -> list[int]:
    """Subscribers with random orders, line items, events, tags and list entries; returns the list ids."""
    for collection, products in ((50, (1, 2)), (51, (3,)), (52, ())):
        for product in products:
            add(db, CollectionProduct(shop_id=shop.id, collection_id=collection, product_id=product))
    people = []
    for _ in range(rng.randint(18, 30)):
        linked = rng.random() < 0.8
        person = customer(db, shop, tags=rng.sample(("vip", "new"), rng.randint(0, 2))) if linked else None
        status = rng.choices(("subscribed", "pending", "unsubscribed"), (8, 1, 1))[0]
        sub = subscriber(db, shop, status=status, customer=person)
        people.append(sub)
        for _ in range(rng.randint(0, 4) if person else 0):
            order(db, shop, person, created_at=NOW - dt.timedelta(hours=rng.uniform(-24, 24 * 120)),
                  test=rng.random() < 0.15, cancelled_at=NOW if rng.random() < 0.2 else None,
                  financial_status=rng.choice(("paid", "pending", "authorized", "partially_paid", "expired",
                                               "refunded", "partially_refunded", "voided", None)),
                  fulfillment_status=rng.choice(("fulfilled", "unfulfilled", "partially_fulfilled")),
                  lines=[{"product_id": rng.choice(PRODUCTS + (None,)), "variant_id": rng.choice(VARIANTS),
                          "title": rng.choice(TITLES), "variant_title": rng.choice(VARIANT_TITLES),
                          "quantity": rng.randint(1, 4), "price": rng.choice(PRICES)}
                         for _ in range(rng.randint(0, 3))])
        for _ in range(rng.randint(0, 3)):
            message(db, shop, sub, status=rng.choice(("delivered", "sent", "failed")),
                    sent_at=NOW - dt.timedelta(days=rng.uniform(0, 60)))
        for _ in range(rng.randint(0, 2)):
            click(db, shop, sub, when=NOW - dt.timedelta(days=rng.uniform(0, 60)))
        if person and rng.random() < 0.4:
            started = NOW - dt.timedelta(days=rng.uniform(0, 20))
            checkout(db, shop, person, started_at=started,
                     completed_at=started + dt.timedelta(hours=1) if rng.random() < 0.5 else None)
        for _ in range(rng.randint(0, 2)):
            subscription_event(db, shop, sub, kind=rng.choice(("subscribed", "unsubscribed")),
                               when=NOW - dt.timedelta(days=rng.uniform(0, 60)))
    discounts(db, shop, people, random.Random(len(people)))
    orphan = add(db, Order(shop_id=shop.id, shopify_id=factories.serial(), customer_id=None, created_at=NOW,
                           financial_status="paid"))  # an order of no customer: never anybody's
    add(db, LineItem(shop_id=shop.id, order_id=orphan.id, shopify_id=factories.serial(), product_id=1, title="Shirt"))
    return [static_list(db, shop, [p.phone for p in rng.sample(people, 5)] + ["+19995550000"]).id,
            static_list(db, shop, []).id]


def discounts(db, shop, people, rng) -> None:
    """Discount campaigns' messages (received or not, carrying a code or not) and orders credited by code or click."""
    campaigns = [discount_campaign(db, shop, mode="unique"), discount_campaign(db, shop, mode="shared"),
                 discount_campaign(db, shop, mode="shared", body="No tag"), discount_campaign(db, shop, mode="none")]
    for sub in people:
        for camp in rng.sample(campaigns, rng.randint(0, 2)):  # one message per campaign and recipient
            code = f"K-{factories.serial()}" if camp.discount_mode == "unique" else None
            campaign_message(db, shop, sub, camp, code=code, status=rng.choice(("delivered", "sent", "failed")),
                             sent_at=NOW - dt.timedelta(days=rng.uniform(0, 40)))
        if sub.customer_id and rng.random() < 0.4:
            attributed(db, shop, sub, rng.choice(campaigns), method=rng.choice(("discount_code", "click")),
                       created_at=NOW - dt.timedelta(days=rng.uniform(0, 40)))


def random_rule(rng, field: str, lists: list[int]) -> dict:
    """A valid rule on `field` whose values come from the pools `random_shop` draws from."""
    if field == "tags":
        return rule("tags", rng.choice(("contains", "not_contains")), rng.choice(("vip", "new", "gone")))
    if field == "fulfillment_status":
        return rule(field, rng.choice(("eq", "neq")), rng.choice(("fulfilled", "unfulfilled", "partially_fulfilled")))
    if field == "payment_status":
        return rule(field, rng.choice(("eq", "neq")), rng.choice(
            ("authorized", "paid", "partially_refunded", "partially_paid", "pending", "refunded", "unpaid", "voided")))
    if field == "order_cancelled":
        return rule(field, "eq", rng.choice(("yes", "no")))
    if field == "ordered_product":
        return rule(field, rng.choice(("eq", "neq")), [str(p) for p in rng.sample(PRODUCTS, rng.randint(1, 3))])
    if field == "ordered_collection":
        return rule(field, rng.choice(("eq", "neq")), [str(c) for c in rng.sample(COLLECTIONS, rng.randint(1, 2))])
    if field == "list":
        return rule("list", rng.choice(("in", "not_in")), rng.choice(lists))
    if field == "event":
        out = event(rng.choice(("placed_order", "received_sms", "clicked_link", "started_checkout", "subscribed",
                                "received_discount", "used_discount")),
                    rng.choice(("performed", "not_performed")), at_least=rng.choice((1, 1, 2, 3)))
        out["within"] = rng.choice(("all_time", "today", "last_7_days", "last_30_days", "last_90_days",
                                    {"last_days": rng.randint(1, 45)}, {"from": "2026-02-01", "to": "2026-03-10"}))
        return out
    attribute = rng.choice(("product_id", "variant_id", "product_title", "variant_title", "quantity", "price"))
    if attribute in ("product_id", "variant_id"):
        value = str(rng.choice(PRODUCTS if attribute == "product_id" else VARIANTS))
        return rule("line_items", rng.choice(("eq", "neq")), value, attribute=attribute)
    if attribute.endswith("title"):
        value = rng.choice(("shirt", "hoodie", "blue", "s", "100%", "CAP", "x"))
        return rule("line_items", rng.choice(("eq", "neq", "contains", "not_contains")), value, attribute=attribute)
    value = rng.randint(1, 4) if attribute == "quantity" else str(rng.choice(PRICES))
    return rule("line_items", rng.choice(("eq", "neq", "lt", "lte", "gt", "gte")), value, attribute=attribute)


def random_group(rng, lists: list[int], depth: int = 1) -> dict:
    """A group of 1-5 order-level rules of two fields (so that merging happens, often with counted events)."""
    fields = [rng.choice(ORDER_LEVEL_FIELDS), rng.choice(("event",) + ORDER_LEVEL_FIELDS)]
    items = []
    for _ in range(rng.randint(1, 5)):
        if depth < 3 and rng.random() < 0.2:
            items.append(random_group(rng, lists, depth + 1))
        else:
            items.append(random_rule(rng, rng.choice(fields), lists))
    return {"match": rng.choice(("all", "any")), "rules": items}


def both_shapes(db, shop, definition, naive=None) -> set[int]:
    """The members of `definition` in the SET shape, after checking that the PROBE shape gives the same
    (and, given the shop's rows loaded by bench/naive_segments.py, that the row-by-row evaluation does too)."""
    found = {}
    for shape in ("set", "probe"):
        statement = compile_definition(definition, shop=shop, now=NOW, session=db, shape=shape)
        found[shape] = set(db.scalars(statement))
    assert found["set"] == found["probe"], definition
    if naive is not None:
        assert set(naive_segments.members(naive, definition, now=NOW)) == found["set"], definition
    return found["set"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_set_and_probe_shapes_agree_on_random_data_for_every_order_level_field(db, shop, other_shop, seed):
    rng = random.Random(seed)
    lists = random_shop(db, shop, rng)
    random_shop(db, other_shop, rng)  # rows of another shop, never seen
    naive = naive_segments.load(db, shop.id)  # an independent reading of the contract, also checking the merging
    answers = set()
    for field in ORDER_LEVEL_FIELDS:
        for _ in range(12):
            answers.add(frozenset(both_shapes(db, shop, where(random_rule(rng, field, lists)), naive)))
    for _ in range(60):
        answers.add(frozenset(both_shapes(db, shop, random_group(rng, lists), naive)))
    # The data and rules are varied enough that the comparisons mean something: many different answers.
    assert len(answers) >= 20


def test_set_shape_merges_rules_on_the_same_rows_and_keeps_counted_ones_apart(db, shop):
    unpaid, person = buyer(db, shop)
    order(db, shop, person, financial_status="pending")
    cancelled, person = buyer(db, shop)
    order(db, shop, person, financial_status="paid", cancelled_at=NOW)
    subscriber(db, shop)
    either = where(rule("payment_status", "eq", "unpaid"), rule("order_cancelled", "eq", "yes"), match="any")
    neither = where(rule("payment_status", "neq", "unpaid"), rule("order_cancelled", "eq", "no"))
    assert both_shapes(db, shop, either) == ids(unpaid, cancelled)
    everyone = set(members(db, where(ALWAYS), shop=shop, now=NOW))
    assert both_shapes(db, shop, neither) == everyone - ids(unpaid, cancelled)
    for definition in (either, neither):  # one subquery over orders each
        sql = str(compile_definition(definition, shop=shop, now=NOW, session=db))
        assert sql.count("FROM orders") == 1, sql
    # Products and collections bought merge into one `product_id IN (...)`.
    order(db, shop, person, lines=[{"product_id": 7}])
    add(db, CollectionProduct(shop_id=shop.id, collection_id=70, product_id=8))
    shirt, someone = buyer(db, shop)
    order(db, shop, someone, lines=[{"product_id": 8}])
    bought = where(rule("ordered_product", "eq", ["7", "9"]), rule("ordered_collection", "eq", ["70"]), match="any")
    assert both_shapes(db, shop, bought) == ids(cancelled, shirt)
    sql = str(compile_definition(bought, shop=shop, now=NOW, session=db))
    assert sql.count("FROM line_items") == 1 and sql.count("line_items.product_id IN") == 1, sql
    # "2 orders, or a fulfilled order" is not "2 orders that are counted or fulfilled".
    fulfilled, person = buyer(db, shop)
    order(db, shop, person, fulfillment_status="fulfilled")
    two = where(event("placed_order", at_least=2), rule("fulfillment_status", "eq", "fulfilled"), match="any")
    assert both_shapes(db, shop, two) == ids(fulfilled)


def test_set_shape_is_uncorrelated_and_probe_shape_is_correlated(db, shop):
    bought = rule("ordered_product", "eq", ["1"])
    top = where(event("placed_order", at_least=2), bought)
    nested = where(event("placed_order", at_least=2), bought, match="any")
    negated = where(rule("ordered_product", "neq", ["1"]))

    def sql(definition, shape="set"):
        return str(compile_definition(definition, shop=shop, now=NOW, session=db, shape=shape))

    # Rules that must hold: semi-joins on an uncorrelated set.
    assert "EXISTS" not in sql(top) and sql(top).count("subscribers.customer_id IN (SELECT") == 2
    assert "HAVING" in sql(top) and "JOIN (SELECT" not in sql(top)
    # Under OR: the set, one row per owner, outer-joined once.
    assert "EXISTS" not in sql(nested) and " IN (SELECT" not in sql(nested)
    assert "LEFT OUTER JOIN (SELECT orders.customer_id" in sql(nested) and "GROUP BY" in sql(nested)
    assert "LEFT OUTER JOIN (SELECT line_items.customer_id" in sql(nested)
    # Negated where it must hold: NOT EXISTS (an anti-join), unless counted ("fewer than 2": an outer join).
    assert "NOT (EXISTS" in sql(negated) and "JOIN (SELECT" not in sql(negated)
    fewer = where(event("placed_order", "not_performed", at_least=2))
    assert "EXISTS" not in sql(fewer) and "LEFT OUTER JOIN (SELECT orders.customer_id" in sql(fewer)
    for definition in (top, nested, negated):
        assert "EXISTS" in sql(definition, "probe") and "line_items.customer_id = subscribers.customer_id" in sql(
            definition, "probe")
    # Line items are read alone (they carry their order's customer and whether it counts), never joined to orders.
    for definition in (top, nested, negated):
        for shape in ("set", "probe"):
            assert "JOIN orders" not in sql(definition, shape)
    with pytest.raises(ValueError):
        compile_definition(top, shop=shop, now=NOW, session=db, shape="fast")


def test_set_shape_nests_inside_a_query_over_orders(db, shop):
    """The uncorrelated subqueries must not be correlated to an enclosing query's `orders`."""
    mine, person = buyer(db, shop)
    bought = order(db, shop, person, lines=[{"product_id": 7}])
    other, somebody = buyer(db, shop)
    order(db, shop, somebody, lines=[{"product_id": 8}])
    audience = compile_definition(where(rule("ordered_product", "eq", ["7"])), shop=shop, now=NOW, session=db)
    orders_of_audience = select(Order.id).where(Order.customer_id.in_(
        select(Subscriber.customer_id).where(Subscriber.id.in_(audience))))
    assert db.scalars(orders_of_audience).all() == [bought.id]


# ---------------------------------------------------------------------------------------------- profile properties

def with_values(db, shop, **values):
    """A subscribed subscriber of `shop` with these property values (by name, as text)."""
    from kinnekt.subscribers import properties
    person = subscriber(db, shop)
    properties.set_values(db, person, values)
    return person


def prop(name, op, value=None) -> dict:
    return rule("property", op, value, attribute=name)


def test_text_properties_compare_case_folded_and_missing_values_satisfy_the_negations(db, shop):
    german = with_values(db, shop, language="  DEUTSCH ")
    swiss = with_values(db, shop, language="Schweizerdeutsch")
    french = with_values(db, shop, language="français")
    none = subscriber(db, shop)
    assert matching(db, shop, prop("language", "eq", "deutsch")) == ids(german)
    assert matching(db, shop, prop("Language", "neq", "deutsch")) == ids(swiss, french, none)
    assert matching(db, shop, prop("language", "contains", "DEUTSCH")) == ids(german, swiss)
    assert matching(db, shop, prop("language", "not_contains", "deutsch")) == ids(french, none)
    assert matching(db, shop, prop("language", "contains", "FRANÇ")) == ids(french)
    assert matching(db, shop, prop("language", "contains", "%")) == set()
    assert matching(db, shop, prop("language", "is_set")) == ids(german, swiss, french)
    assert matching(db, shop, prop("language", "is_not_set")) == ids(none)


def test_number_properties_compare_as_exact_numbers_not_text(db, shop):
    from kinnekt.subscribers import properties
    properties.add(db, shop.id, "Shoe size", "number")
    nine = with_values(db, shop, **{"shoe size": "9"})
    ten_half = with_values(db, shop, **{"Shoe Size": "10.5"})
    hundred = with_values(db, shop, **{"shoe size": "100"})
    negative = with_values(db, shop, **{"shoe size": "-0.0001"})
    none = subscriber(db, shop)
    assert matching(db, shop, prop("Shoe size", "gt", 10)) == ids(ten_half, hundred)  # "100" < "9" as text
    assert matching(db, shop, prop("shoe size", "lte", "10.5")) == ids(nine, ten_half, negative)
    assert matching(db, shop, prop("shoe size", "eq", 10.5)) == ids(ten_half)
    assert matching(db, shop, prop("shoe size", "neq", 10.5)) == ids(nine, hundred, negative, none)
    assert matching(db, shop, prop("shoe size", "lt", 0)) == ids(negative)
    assert matching(db, shop, prop("shoe size", "between", [9, 100])) == ids(ten_half)
    assert matching(db, shop, prop("shoe size", "is_not_set")) == ids(none)


def test_date_properties_take_the_contracts_date_operators_in_local_days(db):
    shop = make_shop("dates.myshopify.com", timezone="Pacific/Auckland")  # NOW is Mar 16, 05:00 there
    from kinnekt.subscribers import properties
    properties.add(db, shop.id, "Joined club", "date")
    today = with_values(db, shop, **{"joined club": "2026-03-16"})
    yesterday = with_values(db, shop, **{"joined club": "2026-03-15"})
    old = with_values(db, shop, **{"joined club": "2025-01-01"})
    future = with_values(db, shop, **{"joined club": "2027-01-01"})
    none = subscriber(db, shop)
    club = "joined club"
    assert matching(db, shop, prop(club, "eq", "today")) == ids(today, future)
    assert matching(db, shop, prop(club, "eq", "yesterday")) == ids(yesterday)
    assert matching(db, shop, prop(club, "neq", "yesterday")) == ids(today, old, future, none)
    assert matching(db, shop, prop(club, "eq", {"from": "2025-01-01", "to": "2026-03-15"})) == ids(yesterday, old)
    assert matching(db, shop, prop(club, "before", "2026-03-15")) == ids(old)
    assert matching(db, shop, prop(club, "after", "2026-03-15")) == ids(today, future)
    assert matching(db, shop, prop(club, "within_last_days", 1)) == ids(today, yesterday, future)
    assert matching(db, shop, prop(club, "more_than_days_ago", 1)) == ids(old)
    assert matching(db, shop, prop(club, "more_than_days_ago", 10**6)) == set()
    assert matching(db, shop, prop(club, "never")) == ids(none)
    assert matching(db, shop, prop(club, "is_set")) == ids(today, yesterday, old, future)


def test_birthdays_by_month_and_day_in_the_shops_zone(db):
    shop = make_shop("birthdays.myshopify.com", timezone="America/New_York")
    late_night = at("2026-03-16T03:30")  # still Mar 15 in New York
    on_15 = with_values(db, shop, birthday="1990-03-15")
    on_16 = with_values(db, shop, birthday="2001-03-16")
    on_22 = with_values(db, shop, birthday="1985-03-22")
    in_april = with_values(db, shop, birthday="1970-04-01")
    none = subscriber(db, shop)
    assert matching(db, shop, prop("birthday", "anniversary_today"), now=late_night) == ids(on_15)
    assert matching(db, shop, prop("birthday", "anniversary_next_days", 7), now=late_night) == ids(on_15, on_16)
    assert matching(db, shop, prop("birthday", "anniversary_next_days", 8), now=late_night) \
        == ids(on_15, on_16, on_22)
    assert matching(db, shop, prop("birthday", "anniversary_next_days", 366), now=late_night) \
        == ids(on_15, on_16, on_22, in_april)
    assert matching(db, shop, prop("birthday", "anniversary_this_month"), now=late_night) \
        == ids(on_15, on_16, on_22)
    assert matching(db, shop, prop("birthday", "anniversary_this_month"), now=at("2026-04-01T05:00")) \
        == ids(in_april)
    assert none.id not in matching(db, shop, prop("birthday", "anniversary_next_days", 366))


def test_a_birthday_window_across_the_new_year(db, shop):
    new_years_eve = with_values(db, shop, birthday="1999-12-31")
    january_2 = with_values(db, shop, birthday="2000-01-02")
    january_3 = with_values(db, shop, birthday="2000-01-03")
    with_values(db, shop, birthday="2000-06-01")
    assert matching(db, shop, prop("birthday", "anniversary_next_days", 3), now=at("2026-12-31T12:00")) \
        == ids(new_years_eve, january_2)
    assert january_3.id in matching(db, shop, prop("birthday", "anniversary_next_days", 4),
                                    now=at("2026-12-31T12:00"))


def test_february_29_birthdays_are_on_february_28_in_other_years(db, shop):
    leapling = with_values(db, shop, birthday="2000-02-29")
    on_28 = with_values(db, shop, birthday="1999-02-28")
    march_1 = with_values(db, shop, birthday="1999-03-01")
    assert matching(db, shop, prop("birthday", "anniversary_today"), now=at("2027-02-28T12:00")) \
        == ids(leapling, on_28)
    assert matching(db, shop, prop("birthday", "anniversary_today"), now=at("2027-03-01T12:00")) == ids(march_1)
    assert matching(db, shop, prop("birthday", "anniversary_today"), now=at("2028-02-28T12:00")) == ids(on_28)
    assert matching(db, shop, prop("birthday", "anniversary_today"), now=at("2028-02-29T12:00")) == ids(leapling)
    assert matching(db, shop, prop("birthday", "anniversary_next_days", 2), now=at("2027-02-27T12:00")) \
        == ids(leapling, on_28)
    assert matching(db, shop, prop("birthday", "anniversary_this_month"), now=at("2027-02-10T12:00")) \
        == ids(leapling, on_28)


def test_property_rules_look_at_their_own_shop_and_property_only(db, shop, other_shop):
    from kinnekt.subscribers import properties
    properties.add(db, shop.id, "Size", "text")
    properties.add(db, shop.id, "Colour", "text")
    properties.add(db, other_shop.id, "Size", "text")
    mine = with_values(db, shop, size="M", colour="red")
    with_values(db, other_shop, size="M")
    assert matching(db, shop, prop("size", "eq", "m")) == ids(mine)
    assert matching(db, shop, prop("colour", "eq", "m")) == set()
    both = [prop("size", "eq", "m"), prop("colour", "eq", "red")]
    assert matching(db, shop, *both, match="any") == ids(mine)
    assert matching(db, shop, *both) == ids(mine)


def test_a_property_rule_naming_no_property_of_the_shop_is_refused(db, shop, other_shop):
    from kinnekt.subscribers import properties
    properties.add(db, other_shop.id, "Size", "text")
    with pytest.raises(DefinitionError) as caught:
        members(db, where(prop("size", "eq", "m")), shop=shop, now=NOW)
    assert caught.value.errors[0]["path"] == "rules[0].attribute"


def test_date_property_rules_agree_with_the_row_by_row_evaluation_on_every_day_of_two_years(db):
    """Birthdays on every month and day (Feb 29 too) against `now`s spread over a common and a leap year, in a
    zone far from UTC: the SQL and bench/naive_segments.py agree on every operator."""
    shop = make_shop("every-day.myshopify.com", timezone="Pacific/Kiritimati")  # UTC+14
    rng = random.Random(5)
    for offset in range(0, 366, 3):
        day = dt.date(2000, 1, 1) + dt.timedelta(days=offset)
        born = day.replace(year=rng.randint(1950, 2005)) if day != dt.date(2000, 2, 29) else dt.date(1996, 2, 29)
        with_values(db, shop, birthday=born.isoformat())
    with_values(db, shop, birthday="2000-02-29")
    subscriber(db, shop)
    db.flush()
    data = naive_segments.load(db, shop.id)
    ops = [("anniversary_today", None), ("anniversary_this_month", None), ("anniversary_next_days", 1),
           ("anniversary_next_days", 10), ("anniversary_next_days", 366), ("within_last_days", 4000),
           ("eq", "last_7_days"), ("neq", "yesterday"), ("before", "1980-06-01"), ("never", None)]
    for now in [at("2027-02-27T09:00"), at("2027-02-28T09:00"), at("2027-02-28T10:30"), at("2027-12-25T12:00"),
                at("2028-02-28T12:00"), at("2028-02-29T12:00"), at("2028-12-31T09:59"), at("2028-12-31T10:00")]:
        for op, value in ops:
            definition = where(prop("birthday", op, value))
            sql = set(members(db, definition, shop=shop, now=now))
            assert set(naive_segments.members(data, definition, now=now)) == sql, (now, op, value)
            assert sql == {s for s in sql if matches_subscriber(db, definition, shop=shop, now=now, subscriber_id=s)}
