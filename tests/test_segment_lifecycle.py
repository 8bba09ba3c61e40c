"""Customer lifecycle: scores (quintiles, and fixed thresholds for small shops), stages, the expected next order,
the daily run that stores them, and the segment re-checks a stage change causes. SQLite and PostgreSQL alike."""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.models import Customer, Order, Segment, SegmentEvent, SegmentMember, Subscriber
from kinnekt.queue import get_queue
from kinnekt.segments import lifecycle, membership
from kinnekt.segments.lifecycle import Facts, expected_next_order, scores, stage_of

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)
_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def _finish_background_jobs(app):
    """Re-checks queued by a test finish before the tables are emptied."""
    yield
    assert get_queue().drain(60)


def days_ago(n: float) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


def person(db, shop, *order_days, amount="20", subscribed=True, **fields) -> Customer:
    """A customer with a counted order `n` days ago for each of `order_days` (its facts set as ingest sets them),
    and a subscriber linked to it; committed."""
    times = sorted(days_ago(n) for n in order_days)
    customer = Customer(shop_id=shop.id, shopify_id=next(_serial), orders_count=len(times),
                        money_spent=Decimal(amount) * len(times), first_order_at=times[0] if times else None,
                        last_order_at=times[-1] if times else None, **fields)
    db.add(customer)
    db.flush()
    for when in times:
        db.add(Order(shop_id=shop.id, shopify_id=next(_serial), customer_id=customer.id, created_at=when,
                     total_price=Decimal(amount)))
    if subscribed:
        db.add(Subscriber(shop_id=shop.id, phone=f"+1212555{next(_serial):04d}", status="subscribed",
                          source="manual", customer_id=customer.id))
    db.commit()
    return customer


def subscriber_of(db, customer: Customer) -> Subscriber:
    return db.scalar(select(Subscriber).where(Subscriber.customer_id == customer.id))


# ---------------------------------------------------------------------------------------------- scoring

def test_stage_table():
    assert stage_of(5, 5, 4) == stage_of(4, 4, 4) == stage_of(4, 3, 4) == "loyal"  # FM = ⌈(3 + 4) / 2⌉ = 4
    assert stage_of(5, 1, 1) == stage_of(4, 3, 3) == stage_of(4, 2, 4) == "high_potential"
    assert stage_of(3, 5, 5) == stage_of(3, 1, 1) == "nurture_needed"
    assert stage_of(2, 5, 5) == "dormant"
    assert stage_of(1, 5, 5) == stage_of(1, 1, 1) == "churned"


def test_small_shops_use_fixed_thresholds():
    facts = [Facts(1, days_ago(10), 6, Decimal("1")), Facts(2, days_ago(10), 1, Decimal("999")),
             Facts(3, days_ago(100), 3, Decimal("5")), Facts(4, days_ago(200), 2, Decimal("5")),
             Facts(5, days_ago(400), 9, Decimal("5")), Facts(6, days_ago(30), 4, Decimal("5")),
             Facts(7, days_ago(31), 2, Decimal("5"))]
    found, relative = scores(facts, NOW)
    assert not relative
    assert found == {1: (5, 5, 5), 2: (5, 1, 1), 3: (3, 3, 3), 4: (2, 2, 2), 5: (1, 5, 5), 6: (5, 4, 4),
                     7: (4, 2, 2)}
    assert [stage_of(*found[i]) for i in range(1, 8)] == [
        "loyal", "high_potential", "nurture_needed", "dormant", "churned", "loyal", "high_potential"]


def test_larger_shops_are_scored_against_their_own_customers():
    n = defaults.LIFECYCLE_MIN_CUSTOMERS * 2  # 100: each fifth is 20 customers
    facts = [Facts(i, days_ago(1000 - i), 1 if i < 70 else 2 + i % 3, Decimal(i)) for i in range(n)]
    found, relative = scores(facts, NOW)
    assert relative
    assert [found[i][0] for i in (0, 19, 20, 39, 40, 79, 80, 99)] == [1, 1, 2, 2, 3, 4, 5, 5]  # later is better
    assert {found[i][1] for i in range(70)} == {1}  # every one-order customer ties at the bottom
    assert found[99][2] == 5 and found[0][2] == 1
    # A shop of long-lapsed customers still has its own best fifth: scores are relative.
    old = [Facts(i, days_ago(3000 + i), 1, Decimal(10)) for i in range(n)]
    assert scores(old, NOW)[0][0][0] == 5


def test_expected_next_order_is_the_last_plus_the_median_interval():
    assert expected_next_order([]) is None and expected_next_order([days_ago(3)]) is None
    assert expected_next_order([days_ago(30), days_ago(10)]) == days_ago(-10)
    # Intervals 10, 10 and 100 days: the median (10) ignores the one long gap.
    assert expected_next_order([days_ago(150), days_ago(50), days_ago(40), days_ago(30)]) == days_ago(20)
    assert expected_next_order([days_ago(5), days_ago(5)]) == days_ago(5)


# ---------------------------------------------------------------------------------------------- the daily run

def test_update_stores_stages_and_when_they_changed(db, shop, segment_rechecks):
    loyal = person(db, shop, 5, 40, 80, 120, 200, 300)
    lapsed = person(db, shop, 200, 230)
    never = person(db, shop)
    unsubscribed = person(db, shop, 700, subscribed=False)
    run = lifecycle.update_shop(db, shop, now=NOW)
    assert not run.relative and run.customers == 3
    db.expire_all()
    assert (loyal.lifecycle_stage, loyal.lifecycle_previous_stage, loyal.lifecycle_changed_at) == ("loyal", None, NOW)
    assert lapsed.lifecycle_stage == "dormant"
    assert never.lifecycle_stage is None and never.lifecycle_changed_at is None
    assert unsubscribed.lifecycle_stage == "churned"
    assert loyal.expected_next_order_at == days_ago(5) + dt.timedelta(days=40)  # intervals 35,40,40,80,100
    assert lapsed.expected_next_order_at == days_ago(200) + dt.timedelta(days=30)
    assert never.expected_next_order_at is None
    # The subscribers of the customers that changed are re-checked; nobody when nothing changes.
    assert segment_rechecks == [(shop.id, sorted([subscriber_of(db, loyal).id, subscriber_of(db, lapsed).id]))]
    assert lifecycle.update_shop(db, shop, now=NOW).rechecked == []
    assert len(segment_rechecks) == 1
    # A hundred days on, the loyal customer has slipped: the previous stage and the moment are kept.
    later = NOW + dt.timedelta(days=100)
    lifecycle.update_shop(db, shop, now=later)
    db.expire_all()
    assert (loyal.lifecycle_stage, loyal.lifecycle_previous_stage, loyal.lifecycle_changed_at) \
        == ("nurture_needed", "loyal", later)
    assert lapsed.lifecycle_stage == "dormant" and lapsed.lifecycle_changed_at == NOW  # unchanged: not touched


def test_only_the_shops_own_customers_are_touched(db, shop, other_shop):
    mine = person(db, shop, 3)
    theirs = person(db, other_shop, 3)
    lifecycle.update_shop(db, shop, now=NOW)
    db.expire_all()
    assert mine.lifecycle_stage == "high_potential" and theirs.lifecycle_stage is None


def test_a_stage_change_moves_subscribers_across_segments_and_logs_it(db, shop):
    """The change is a membership change like any other: the pending re-check path moves the subscriber."""
    slipping = person(db, shop, 20, 50, 80, 110)
    seg = Segment(shop_id=shop.id, name="Churn risk", kind="manual", build_status="pending", definition={
        "match": "all", "rules": [{"field": "lifecycle_stage", "op": "eq", "value": "dormant"},
                                  {"field": "previous_lifecycle_stage", "op": "eq", "value": "loyal"}]})
    loyal_seg = Segment(shop_id=shop.id, name="Loyal", kind="manual", build_status="pending", definition={
        "match": "all", "rules": [{"field": "lifecycle_stage", "op": "eq", "value": "loyal"}]})
    db.add_all([seg, loyal_seg])
    db.commit()
    lifecycle.update_shop(db, shop, now=NOW)
    membership.build(db, seg.id, now=NOW)
    membership.build(db, loyal_seg.id, now=NOW)
    sub = subscriber_of(db, slipping)
    assert _members(db, loyal_seg) == {sub.id} and _members(db, seg) == set()
    lifecycle.update_shop(db, shop, now=NOW + dt.timedelta(days=200))  # 220 days since the last order: dormant
    assert get_queue().drain(30)
    db.expire_all()
    assert _members(db, seg) == {sub.id} and _members(db, loyal_seg) == set()
    log = db.execute(select(SegmentEvent.segment_id, SegmentEvent.kind, SegmentEvent.cause)
                     .where(SegmentEvent.subscriber_id == sub.id).order_by(SegmentEvent.id)).all()
    assert log[-2:] == [(loyal_seg.id, "leave", "recheck"), (seg.id, "enter", "recheck")]


def test_order_ingest_keeps_the_expected_next_order_current(db, shop):
    from kinnekt.shopify.ingest.orders import recompute_customer_facts
    customer = person(db, shop, 30, 20)
    db.add(Order(shop_id=shop.id, shopify_id=next(_serial), customer_id=customer.id, created_at=days_ago(2)))
    db.add(Order(shop_id=shop.id, shopify_id=next(_serial), customer_id=customer.id, created_at=days_ago(1),
                 cancelled_at=days_ago(1)))  # not counted
    db.flush()
    recompute_customer_facts(db, shop.id, [customer.id])
    db.commit()
    db.expire_all()
    assert customer.orders_count == 3
    assert customer.expected_next_order_at == days_ago(2) + dt.timedelta(days=14)  # intervals 10 and 18


def test_the_daily_job_runs_every_installed_shop(app, db, shop, other_shop):
    from kinnekt.schedule import periodic_jobs
    from kinnekt.segments.tasks import update_lifecycle_stages
    [entry] = [p for p in periodic_jobs() if p.func is update_lifecycle_stages]
    assert entry.interval == defaults.LIFECYCLE_INTERVAL_SECONDS == 86400
    from kinnekt.db import utcnow
    offset = (utcnow() - NOW).total_seconds() / 86400  # the job runs at the real now; `person` counts from NOW
    mine, theirs = person(db, shop, 3 - offset), person(db, other_shop, 400 - offset)
    assert update_lifecycle_stages() == 2
    assert get_queue().drain(30)
    db.expire_all()
    assert (mine.lifecycle_stage, theirs.lifecycle_stage) == ("high_potential", "churned")


def test_distribution_counts_subscribed_numbers_by_stage(db, shop):
    person(db, shop, 3)
    person(db, shop, 4)
    person(db, shop, 200, 230)
    person(db, shop, 700, subscribed=False)
    person(db, shop)
    db.add(Subscriber(shop_id=shop.id, phone="+12125559999", status="subscribed", source="manual"))
    db.commit()
    assert lifecycle.distribution(db, shop).empty
    lifecycle.update_shop(db, shop, now=NOW)
    found = lifecycle.distribution(db, shop)
    assert found.counts == {"high_potential": 2, "dormant": 1} and found.without_stage == 2 and found.total == 5
    assert [(stage, count) for stage, _label, count, _share in found.rows()] == [
        ("loyal", 0), ("high_potential", 2), ("nurture_needed", 0), ("dormant", 1), ("churned", 0)]


def _members(db, segment) -> set[int]:
    return set(db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == segment.id)))


# ---------------------------------------------------------------------------------------------- SQL = the rules

def _random_shop(db, shop, rng, customers: int) -> None:
    """Customers with random counted, test and cancelled orders (ties in every score, times to the microsecond),
    some with a stage and an expected next order from an earlier run; committed."""
    stages = [None, *lifecycle.STAGE_LABELS]
    for _ in range(customers):
        times = sorted(NOW - dt.timedelta(days=rng.choice([rng.randint(0, 800), 30, 90]),
                                          seconds=rng.randint(0, 86399),
                                          microseconds=rng.choice([0, rng.randint(0, 999999)]))
                       for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 8])))
        if len(times) > 2 and rng.random() < 0.2:
            times[1] = times[0]  # two orders at the same instant
        amount = Decimal(rng.choice(["10", "19.99", "20", "55.5", "120"]))
        customer = Customer(shop_id=shop.id, shopify_id=next(_serial), orders_count=len(times),
                            money_spent=amount * len(times), last_order_at=times[-1] if times else None,
                            first_order_at=times[0] if times else None, lifecycle_stage=rng.choice(stages),
                            expected_next_order_at=rng.choice([None, days_ago(-rng.randint(1, 90))]))
        if times and rng.random() < 0.05:
            customer.last_order_at = None  # facts not there yet: no stage
        db.add(customer)
        db.flush()
        for when in times:
            db.add(Order(shop_id=shop.id, shopify_id=next(_serial), customer_id=customer.id, created_at=when,
                         total_price=amount))
        for _ in range(rng.choice([0, 0, 1])):  # orders that do not count
            db.add(Order(shop_id=shop.id, shopify_id=next(_serial), customer_id=customer.id, total_price=amount,
                         created_at=days_ago(rng.randint(0, 400)), **rng.choice([{"test": True},
                                                                                 {"cancelled_at": days_ago(1)}])))
        if rng.random() < 0.5:
            db.add(Subscriber(shop_id=shop.id, phone=f"+1212555{next(_serial):04d}", status="subscribed",
                              source="manual", customer_id=customer.id))
    db.commit()


def _by_the_rules(db, shop) -> tuple[dict, dict, dict]:
    """Each customer's stage and expected next order by the Python statement of the rules, and the stored ones."""
    rows = db.execute(select(Customer.id, Customer.last_order_at, Customer.orders_count, Customer.money_spent,
                             Customer.lifecycle_stage).where(Customer.shop_id == shop.id)).all()
    facts = [Facts(r.id, r.last_order_at, r.orders_count, r.money_spent) for r in rows
             if r.orders_count > 0 and r.last_order_at is not None]
    scored, _ = scores(facts, NOW)
    times: dict[int, list] = {}
    for customer_id, created_at in db.execute(select(Order.customer_id, Order.created_at).where(
            Order.shop_id == shop.id, Order.test.is_(False), Order.cancelled_at.is_(None))):
        times.setdefault(customer_id, []).append(created_at)
    stages = {r.id: stage_of(*scored[r.id]) if r.id in scored else None for r in rows}
    expected = {r.id: expected_next_order(times.get(r.id, [])) for r in rows}
    return stages, expected, {r.id: r.lifecycle_stage for r in rows}


@pytest.mark.parametrize("customers, seed", [(400, 1), (400, 2), (30, 3)])
def test_the_daily_run_in_sql_agrees_with_the_rules_on_a_random_shop(db, shop, other_shop, customers, seed):
    """The set-based run (window functions in the database) gives every customer the stage and the expected next
    order the Python rules give, changes exactly those that differ, and keeps the stage before the change."""
    import random
    rng = random.Random(seed)
    _random_shop(db, shop, rng, customers)
    _random_shop(db, other_shop, rng, 20)
    stages, expected, before = _by_the_rules(db, shop)
    _, _, theirs_before = _by_the_rules(db, other_shop)
    old_due = {i: due for i, due in db.execute(select(Customer.id, Customer.expected_next_order_at)
                                               .where(Customer.shop_id == shop.id))}
    run = lifecycle.update_shop(db, shop, now=NOW, recheck=False)
    assert run.relative == (customers >= defaults.LIFECYCLE_MIN_CUSTOMERS)
    db.expire_all()
    stored = {c.id: c for c in db.scalars(select(Customer).where(Customer.shop_id == shop.id))}
    assert {i: c.lifecycle_stage for i, c in stored.items()} == stages
    assert {i: c.expected_next_order_at for i, c in stored.items()} == expected
    moved = {i for i in stages if stages[i] != before[i]}
    assert run.stage_changes == len(moved) and run.expected_changes == sum(
        1 for i in expected if expected[i] != old_due[i])
    for i, customer in stored.items():
        if i in moved:
            assert (customer.lifecycle_previous_stage, customer.lifecycle_changed_at) == (before[i], NOW)
        else:
            assert customer.lifecycle_changed_at is None
    linked = set(db.scalars(select(Subscriber.customer_id).where(Subscriber.shop_id == shop.id)))
    changed = moved | {i for i in expected if expected[i] != old_due[i]}
    assert run.rechecked == sorted(db.scalars(select(Subscriber.id).where(
        Subscriber.shop_id == shop.id, Subscriber.customer_id.in_(changed & linked))))
    assert _by_the_rules(db, other_shop)[2] == theirs_before  # another shop's customers are left alone
    snapshot = {c.id: (c.lifecycle_stage, c.expected_next_order_at, c.orders_count, c.last_order_at)
                for c in db.scalars(select(Customer).where(Customer.shop_id == shop.id))}
    again = lifecycle.update_shop(db, shop, now=NOW, recheck=False)
    db.expire_all()
    after = {c.id: (c.lifecycle_stage, c.expected_next_order_at, c.orders_count, c.last_order_at)
             for c in db.scalars(select(Customer).where(Customer.shop_id == shop.id))}
    assert {i: v for i, v in after.items() if v != snapshot[i]} == {}
    assert (again.stage_changes, again.expected_changes) == (0, 0)  # nothing drifts between runs
