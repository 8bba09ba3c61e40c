"""Customer lifecycle: each customer's stage from recency, frequency and money, and when their next order is due.

Stages are computed once a day per shop (`update_shop`, run by kinnekt/segments/tasks.py) and kept on the
customer row with the stage before the latest change and when that change was seen; segment rules
`lifecycle_stage`, `previous_lifecycle_stage` and `expected_next_order` read them (docs/segment-rules.md).

**Scores.** Over the shop's customers with at least one counted order (segment-rules.md "Which orders
count"), each gets three scores from 1 to 5:

- R from the last order's time (later is better), F from the number of counted orders, M from money spent;
- with at least `defaults.LIFECYCLE_MIN_CUSTOMERS` such customers, scores are quintiles of the shop's own
  customers: score = 1 + ⌊5 × (customers with a strictly lower value) / (all of them)⌋, so equal values get
  equal scores (every one-order customer has F = 1);
- with fewer (a new or small shop), fixed thresholds instead: R by days since the last order
  (`LIFECYCLE_RECENCY_DAYS`), F by orders (`LIFECYCLE_FREQUENCY_ORDERS`), and M = F (an amount means nothing
  without the shop's own customers to compare it with, and currencies differ).

**Stages**, from R and FM = ⌈(F + M) / 2⌉:

| R | stage |
|---|---|
| 4–5 and FM 4–5 | `loyal` |
| 4–5 and FM 1–3 | `high_potential` |
| 3 | `nurture_needed` |
| 2 | `dormant` |
| 1 | `churned` |

A customer without a counted order has no stage (None). **Expected next order**: the last counted order plus
the median interval between the customer's counted orders; None with fewer than two. It is also refreshed
when orders are ingested (`refresh_expected_next_order`, from recompute_customer_facts).

A stage change is a change of segment data like any other: the linked subscribers are re-checked through the
pending re-check path (`membership.subscribers_changed`), which logs their enters and leaves.
"""
from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import (BigInteger, and_, bindparam, case, cast, func, literal, literal_column, null, select,
                        update)
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import UTCDateTime, aware_utc
from kinnekt.models import Customer, Order, Shop, Subscriber
from kinnekt.segments.rules import STAGES  # the stages, best first: the contract's values (rules imports no lifecycle)
from kinnekt.models.subscriber import SubscriberStatus

STAGE_LABELS = {"loyal": "Loyal", "high_potential": "High potential", "nurture_needed": "Needs nurturing",
                "dormant": "Dormant", "churned": "Churned"}
"""The stages in the merchant's words."""

CUSTOMERS = Customer.__table__
_KEEP_UPDATED_AT = {"updated_at": CUSTOMERS.c.updated_at}
"""Derived figures are not an edit of the customer: its updated_at (Shopify's sync bookkeeping) stays."""


@dataclass(frozen=True)
class Facts:
    """What a customer's stage is computed from."""

    customer_id: int
    last_order_at: dt.datetime
    orders: int
    money: Decimal


@dataclass
class Run:
    """What one shop's update changed."""

    customers: int = 0
    relative: bool = False
    stage_changes: int = 0
    expected_changes: int = 0
    rechecked: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- scoring

def _quintile_scores(values: list) -> dict:
    """value -> 1 + ⌊5 × (values strictly lower) / n⌋ (1..5; equal values share a score)."""
    ordered = sorted(values)
    n = len(ordered)
    return {value: 1 + (5 * bisect.bisect_left(ordered, value)) // n for value in set(ordered)}


def _threshold_score(value: float, thresholds: tuple, *, at_most: bool) -> int:
    """1..5: `at_most` (recency in days): 5 at or under the first threshold, down to 1 past the last; else (orders)
    1 below the first threshold, up to 5 from the last."""
    if at_most:
        return 5 - sum(1 for limit in thresholds if value > limit)
    return 1 + sum(1 for limit in thresholds if value >= limit)


def scores(facts: list[Facts], now: dt.datetime) -> tuple[dict[int, tuple[int, int, int]], bool]:
    """Each customer's (R, F, M) scores, and whether they are relative to the shop (quintiles) or fixed."""
    if len(facts) >= defaults.LIFECYCLE_MIN_CUSTOMERS:
        recency = _quintile_scores([f.last_order_at for f in facts])
        frequency = _quintile_scores([f.orders for f in facts])
        money = _quintile_scores([f.money for f in facts])
        return {f.customer_id: (recency[f.last_order_at], frequency[f.orders], money[f.money]) for f in facts}, True
    out = {}
    for f in facts:
        days = (now - f.last_order_at).total_seconds() / 86400
        r = _threshold_score(days, defaults.LIFECYCLE_RECENCY_DAYS, at_most=True)
        frequency = _threshold_score(f.orders, defaults.LIFECYCLE_FREQUENCY_ORDERS, at_most=False)
        out[f.customer_id] = (r, frequency, frequency)
    return out, False


def stage_of(r: int, f: int, m: int) -> str:
    """The stage of a customer with these scores (the table in the module docstring)."""
    fm = (f + m + 1) // 2
    if r >= 4:
        return "loyal" if fm >= 4 else "high_potential"
    return {3: "nurture_needed", 2: "dormant"}.get(r, "churned")


_MICROSECOND = dt.timedelta(microseconds=1)


def expected_next_order(order_times: list[dt.datetime]) -> dt.datetime | None:
    """The last order plus the median interval between consecutive orders; None with fewer than two orders.

    Intervals are whole microseconds and the median of an even number of them is rounded down to one, exactly as
    the daily run computes it in SQL (`_expected_sql`), so the two never disagree about a customer.
    """
    if len(order_times) < 2:
        return None
    times = sorted(order_times)
    gaps = sorted((later - earlier) // _MICROSECOND for earlier, later in zip(times, times[1:]))
    middle = len(gaps) // 2
    median = gaps[middle] if len(gaps) % 2 else (gaps[middle - 1] + gaps[middle]) // 2
    return times[-1] + median * _MICROSECOND


# ---------------------------------------------------------------------------------------------- storing

def _counted_order_times(session: OrmSession, shop_id: int, customer_ids=None):
    """(customer_id, created_at) of the shop's counted orders (of these customers), by customer then time."""
    query = (select(Order.customer_id, Order.created_at)
             .where(Order.shop_id == shop_id, Order.customer_id.is_not(None), Order.test.is_(False),
                    Order.cancelled_at.is_(None))
             .order_by(Order.customer_id, Order.created_at)
             .execution_options(yield_per=defaults.SEGMENT_EXPORT_CHUNK))
    if customer_ids is not None:
        query = query.where(Order.customer_id.in_(customer_ids))
    return session.execute(query)


def _expected_by_customer(rows) -> dict[int, dt.datetime | None]:
    times: dict[int, list[dt.datetime]] = {}
    for customer_id, created_at in rows:
        times.setdefault(customer_id, []).append(aware_utc(created_at))
    return {customer_id: expected_next_order(found) for customer_id, found in times.items()}


def refresh_expected_next_order(session: OrmSession, shop_id: int, customer_ids) -> None:
    """Set these customers' expected next order from their counted orders (no commit; the ingest's transaction)."""
    ids = sorted({int(i) for i in customer_ids})
    if not ids:
        return
    for start in range(0, len(ids), defaults.LIFECYCLE_UPDATE_CHUNK):
        chunk = ids[start:start + defaults.LIFECYCLE_UPDATE_CHUNK]
        expected = _expected_by_customer(_counted_order_times(session, shop_id, chunk))
        session.execute(
            update(CUSTOMERS).where(CUSTOMERS.c.shop_id == shop_id, CUSTOMERS.c.id == bindparam("b_id"))
            .values(expected_next_order_at=bindparam("b_expected"), **_KEEP_UPDATED_AT),
            [{"b_id": i, "b_expected": expected.get(i)} for i in chunk])


def _epoch_us(column, dialect: str):
    """A UTCDateTime column as whole microseconds since 1970 (exact on both databases; SQLite keeps datetimes as
    'YYYY-MM-DD HH:MM:SS.ffffff' text)."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", column) * 1_000_000, BigInteger)
    # Whole seconds from the text without its fraction: SQLite rounds a fraction to milliseconds when it parses it.
    return (cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger) * 1_000_000
            + cast(func.coalesce(func.nullif(func.substr(column, 21, 6), ""), "0"), BigInteger))


def _from_epoch_us(value, dialect: str):
    """Whole microseconds since 1970 as a value of a UTCDateTime column (the inverse of _epoch_us)."""
    if dialect == "postgresql":
        # Seconds and microseconds apart: an interval times a number goes through a double, exact for each alone.
        return (literal_column("TIMESTAMP '1970-01-01 00:00:00'")
                + literal_column("INTERVAL '1 second'") * (value // 1_000_000)
                + literal_column("INTERVAL '1 microsecond'") * (value % 1_000_000))
    return func.strftime("%Y-%m-%d %H:%M:%S", value // 1_000_000, "unixepoch").concat(".").concat(
        func.printf("%06d", value % 1_000_000))


def _score_columns(counted, customers: int, now: dt.datetime):
    """(R, F, M) of the counted customers as SQL (see `scores`): quintiles by rank, or the fixed thresholds."""
    if customers >= defaults.LIFECYCLE_MIN_CUSTOMERS:
        def quintile(value):  # 1 + ⌊5 × (values strictly lower) / n⌋; rank() - 1 counts the strictly lower ones
            rank = func.rank().over(partition_by=counted.c.counted, order_by=value)
            return 1 + (5 * (rank - 1)) // customers
        return (quintile(counted.c.last_order_at), quintile(counted.c.orders_count), quintile(counted.c.money))
    recency = literal(5)
    for days in defaults.LIFECYCLE_RECENCY_DAYS:  # more than `days` days ago <=> before now - days
        cutoff = bindparam(None, now - dt.timedelta(days=days), type_=UTCDateTime)
        recency = recency - case((counted.c.last_order_at < cutoff, 1), else_=0)
    frequency = literal(1)
    for orders in defaults.LIFECYCLE_FREQUENCY_ORDERS:
        frequency = frequency + case((counted.c.orders_count >= orders, 1), else_=0)
    return recency, frequency, frequency


def _stage_sql(r, f, m):
    """The stage of scores r, f, m as SQL (see `stage_of`)."""
    fm = (f + m + 1) // 2
    return case((r >= 4, case((fm >= 4, "loyal"), else_="high_potential")),
                (r == 3, "nurture_needed"), (r == 2, "dormant"), else_="churned")


def _stages_sql(shop_id: int, customers: int, now: dt.datetime):
    """(id, stage) of every customer of the shop, computed by the database (None: no counted order).

    One chain of subqueries over the shop's customers, the counted ones ranked apart from the others (a
    partition), so that no step joins a computed set back to the customers (SQLite would scan it per row)."""
    has_order = and_(CUSTOMERS.c.orders_count > 0, CUSTOMERS.c.last_order_at.is_not(None))
    counted = (select(CUSTOMERS.c.id, CUSTOMERS.c.last_order_at, CUSTOMERS.c.orders_count,
                      func.coalesce(CUSTOMERS.c.money_spent, 0).label("money"),
                      case((has_order, 1), else_=0).label("counted"))
               .where(CUSTOMERS.c.shop_id == shop_id)).subquery("counted")
    r, f, m = _score_columns(counted, customers, now)
    scored = select(counted.c.id, counted.c.counted, r.label("r"), f.label("f"), m.label("m")).subquery("scored")
    return (select(scored.c.id, case((scored.c.counted == 1, _stage_sql(scored.c.r, scored.c.f, scored.c.m)),
                                     else_=null()).label("stage"))
            .subquery("staged"))


def _expected_sql(shop_id: int, dialect: str):
    """(customer id, expected next order in epoch microseconds) of the shop's customers with two counted orders
    or more, computed by the database (see `expected_next_order`)."""
    orders = Order.__table__
    times = (select(orders.c.customer_id, _epoch_us(orders.c.created_at, dialect).label("t"))
             .where(orders.c.shop_id == shop_id, orders.c.customer_id.is_not(None), orders.c.test.is_(False),
                    orders.c.cancelled_at.is_(None))).subquery("times")
    gaps = select(times.c.customer_id,
                  (times.c.t - func.lag(times.c.t).over(partition_by=times.c.customer_id, order_by=times.c.t))
                  .label("gap"),
                  func.max(times.c.t).over(partition_by=times.c.customer_id).label("last")).subquery("gaps")
    ranked = select(gaps.c.customer_id, gaps.c.gap, gaps.c.last,
                    func.row_number().over(partition_by=gaps.c.customer_id, order_by=gaps.c.gap).label("n"),
                    func.count().over(partition_by=gaps.c.customer_id).label("gaps")
                    ).where(gaps.c.gap.is_not(None)).subquery("ranked")
    median = cast(func.sum(ranked.c.gap), BigInteger) // func.count()  # PostgreSQL sums bigints as numeric
    return (select(ranked.c.customer_id, (func.max(ranked.c.last) + median).label("due"))
            .where(ranked.c.n.in_([(ranked.c.gaps + 1) // 2, (ranked.c.gaps + 2) // 2]))  # the middle one or two
            .group_by(ranked.c.customer_id)).subquery("expected")


def update_shop(session: OrmSession, shop: Shop, *, now: dt.datetime | None = None, recheck: bool = True) -> Run:
    """Compute every customer's stage and expected next order at `now`, store what changed, commit, and queue a
    re-check of the subscribers of the customers whose stage or expected next order changed (unless not `recheck`:
    the demo seed, whose segments are built afterwards).

    Both are computed and stored by UPDATE ... FROM statements (window functions over the shop's customers and
    orders, on PostgreSQL and SQLite alike): no customer is loaded into Python, only the ids of those that
    changed come back (RETURNING) for their subscribers' re-check. The functions `scores`, `stage_of` and
    `expected_next_order` state the same rules in Python (the order ingest uses the last one).
    """
    now = aware_utc(now)
    dialect = session.get_bind().dialect.name
    customers = session.scalar(select(func.count()).select_from(CUSTOMERS).where(
        CUSTOMERS.c.shop_id == shop.id, CUSTOMERS.c.orders_count > 0, CUSTOMERS.c.last_order_at.is_not(None)))
    run = Run(customers=customers, relative=customers >= defaults.LIFECYCLE_MIN_CUSTOMERS)
    # Every customer of the shop with its new stage (None without a counted order). The previous stage is the one
    # this statement replaces (a concurrent run's change is seen, row by row).
    staged = _stages_sql(shop.id, customers, now)
    changed_stage = session.scalars(
        update(CUSTOMERS).where(CUSTOMERS.c.shop_id == shop.id, CUSTOMERS.c.id == staged.c.id,
                                CUSTOMERS.c.lifecycle_stage.is_distinct_from(staged.c.stage))
        .values(lifecycle_stage=staged.c.stage, lifecycle_previous_stage=CUSTOMERS.c.lifecycle_stage,
                lifecycle_changed_at=now, **_KEEP_UPDATED_AT)
        .returning(CUSTOMERS.c.id)).all()
    # The expected next order of the customers with two counted orders or more, then none for the others; only
    # where no order arrived since the statement's snapshot (the ingest set it from the newer orders then).
    expected = _expected_sql(shop.id, dialect)
    new_due = (select(expected.c.customer_id, expected.c.due, CUSTOMERS.c.orders_count, CUSTOMERS.c.last_order_at)
               .join_from(expected, CUSTOMERS, CUSTOMERS.c.id == expected.c.customer_id)).subquery("new_due")
    changed_due = session.scalars(
        update(CUSTOMERS).where(CUSTOMERS.c.shop_id == shop.id, CUSTOMERS.c.id == new_due.c.customer_id,
                                CUSTOMERS.c.orders_count == new_due.c.orders_count,
                                CUSTOMERS.c.last_order_at.is_not_distinct_from(new_due.c.last_order_at),
                                _epoch_us(CUSTOMERS.c.expected_next_order_at, dialect)
                                .is_distinct_from(new_due.c.due))
        .values(expected_next_order_at=_from_epoch_us(new_due.c.due, dialect), **_KEEP_UPDATED_AT)
        .returning(CUSTOMERS.c.id)).all()
    orders = Order.__table__
    counted_orders = (select(func.count()).select_from(orders).where(
        orders.c.customer_id == CUSTOMERS.c.id, orders.c.shop_id == shop.id, orders.c.test.is_(False),
        orders.c.cancelled_at.is_(None)).scalar_subquery())
    changed_due += session.scalars(
        update(CUSTOMERS).where(CUSTOMERS.c.shop_id == shop.id, CUSTOMERS.c.expected_next_order_at.is_not(None),
                                counted_orders < 2)
        .values(expected_next_order_at=None, **_KEEP_UPDATED_AT)
        .returning(CUSTOMERS.c.id)).all()
    session.commit()
    run.stage_changes, run.expected_changes = len(changed_stage), len(changed_due)
    run.rechecked = _subscribers_of(session, shop.id, set(changed_stage) | set(changed_due))
    if run.rechecked and recheck:
        from kinnekt.segments.membership import subscribers_changed
        for start in range(0, len(run.rechecked), defaults.LIFECYCLE_UPDATE_CHUNK):
            subscribers_changed(shop.id, run.rechecked[start:start + defaults.LIFECYCLE_UPDATE_CHUNK])
    return run


def _subscribers_of(session: OrmSession, shop_id: int, customer_ids: set[int]) -> list[int]:
    ids = sorted(customer_ids)
    found: set[int] = set()
    for start in range(0, len(ids), defaults.LIFECYCLE_UPDATE_CHUNK):
        found.update(session.scalars(select(Subscriber.id).where(
            Subscriber.shop_id == shop_id,
            Subscriber.customer_id.in_(ids[start:start + defaults.LIFECYCLE_UPDATE_CHUNK]))))
    return sorted(found)


def shops_to_update(session: OrmSession) -> list[int]:
    """Ids of the installed shops, whose customers get their stages every day."""
    return list(session.scalars(select(Shop.id).where(Shop.uninstalled_at.is_(None)).order_by(Shop.id)
                                .execution_options(all_shops=True)))


# ---------------------------------------------------------------------------------------------- one customer

@dataclass(frozen=True)
class Standing:
    """One customer's stage as a page shows it: the stage in the merchant's words (None: no counted order yet),
    when it was reached, the stage before it (if any), and when the next order is expected (if known)."""

    stage: str | None
    label: str | None
    since: dt.datetime | None
    previous_label: str | None
    expected_next_order_at: dt.datetime | None


def standing(customer: Customer) -> Standing:
    """The customer's lifecycle standing, read from the columns the daily run and the order ingest keep."""
    stage = customer.lifecycle_stage if customer.lifecycle_stage in STAGE_LABELS else None
    previous = customer.lifecycle_previous_stage if stage else None
    return Standing(stage=stage, label=STAGE_LABELS.get(stage) if stage else None,
                    since=customer.lifecycle_changed_at if stage else None,
                    previous_label=STAGE_LABELS.get(previous) if previous else None,
                    expected_next_order_at=customer.expected_next_order_at)


# ---------------------------------------------------------------------------------------------- dashboard

@dataclass(frozen=True)
class Distribution:
    """How many of the shop's subscribed numbers are in each stage, and how many have no stage (no order yet)."""

    counts: dict[str, int]
    without_stage: int

    @property
    def total(self) -> int:
        """Subscribed numbers counted, with and without a stage."""
        return sum(self.counts.values()) + self.without_stage

    @property
    def empty(self) -> bool:
        """True while no subscribed number has a stage (no customer ordered yet, or the first daily run is due)."""
        return not any(self.counts.values())

    def rows(self) -> list[tuple[str, str, int, float]]:
        """(stage, label, count, share of all subscribed numbers 0..1) in STAGES order."""
        total = self.total or 1
        return [(stage, STAGE_LABELS[stage], self.counts.get(stage, 0), self.counts.get(stage, 0) / total)
                for stage in STAGES]


def distribution(session: OrmSession, shop: Shop) -> Distribution:
    """The stages of the shop's subscribed, unsuppressed subscribers (their customers' stages), counted."""
    counts: dict[str, int] = {}
    without = 0
    rows = session.execute(
        select(Customer.lifecycle_stage, func.count())
        .select_from(Subscriber)
        .outerjoin(Customer, and_(Customer.id == Subscriber.customer_id, Customer.shop_id == Subscriber.shop_id))
        .where(Subscriber.shop_id == shop.id, Subscriber.status == SubscriberStatus.SUBSCRIBED,
               Subscriber.suppressed_at.is_(None))
        .group_by(Customer.lifecycle_stage)).all()
    for stage, number in rows:
        if stage in STAGE_LABELS:
            counts[stage] = counts.get(stage, 0) + number
        else:
            without += number
    return Distribution(counts=counts, without_stage=without)
