"""Attribution: an order is credited by the campaign's discount code, else by the customer's last click in the
window."""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.campaigns import attribution, links
from kinnekt.models import Attribution, Click, Link, Order
from kinnekt.shopify.ingest.orders import delete_order, upsert_orders
from kinnekt.shopify.ingest.rows import OrderRow
from tests import factories
from tests.conftest import make_shop
from tests.factories import customer, message
from tests.test_campaign_links import T0, campaign, recipient

pytestmark = pytest.mark.usefixtures("finished_jobs")

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
_order_ids = itertools.count(9_000_001)


def order(db, shop, *, at, customer_row=None, total="50.00", current=None, codes=(), landing=None, phone=None,
          **fields) -> Order:
    """An order of `shop` placed at `at`; committed (not attributed)."""
    return factories.order(db, shop, customer_row, created_at=at, shopify_id=next(_order_ids),
                           total_price=Decimal(total),
                           current_total_price=Decimal(current) if current is not None else None,
                           discount_codes=[{"code": c} for c in codes], landing_site=landing, phone=phone, **fields)


def click(db, shop, camp, sub, at, url="https://alpha.example/sale") -> Click:
    """A click by `sub` on their link of `camp` at `at` (the message is made when missing); committed."""
    from kinnekt.models import Message
    msg = db.scalar(select(Message).where(Message.campaign_id == camp.id, Message.subscriber_id == sub.id))
    if msg is None:
        msg = message(db, camp, sub)
    link = links.link_for(db, shop, msg, url)
    row = Click(shop_id=shop.id, link_id=link.id, campaign_id=camp.id, subscriber_id=sub.id, at=at)
    db.add(row)
    db.commit()
    return row


def credited(db, order_row) -> tuple | None:
    """(campaign id, subscriber id, method, revenue) of the order's attribution, or None."""
    row = db.scalar(select(Attribution).where(Attribution.order_id == order_row.id))
    return None if row is None else (row.campaign_id, row.subscriber_id, row.method, row.revenue)


def shopper(db, shop):
    """A customer with a linked subscriber."""
    person = customer(db, shop, phone=None)
    return person, recipient(db, shop, customer_row=person)


# ---------------------------------------------------------------------------------------------- by click

def test_a_click_inside_the_window_credits_the_order(db, shop):
    camp = campaign(db, shop)
    person, sub = shopper(db, shop)
    click(db, shop, camp, sub, T0 + HOUR)
    inside = order(db, shop, at=T0 + HOUR + 5 * DAY - dt.timedelta(seconds=1), customer_row=person,
                   total="80.00", current="60.00")
    assert attribution.attribute_order(db, inside) is not None
    assert credited(db, inside) == (camp.id, sub.id, "click", Decimal("60.0000"))  # net of the refund


def test_a_click_outside_the_window_or_after_the_order_does_not(db, shop):
    camp = campaign(db, shop)
    person, sub = shopper(db, shop)
    click(db, shop, camp, sub, T0 + HOUR)
    late = order(db, shop, at=T0 + HOUR + 5 * DAY + dt.timedelta(seconds=1), customer_row=person)
    before = order(db, shop, at=T0 + HOUR - dt.timedelta(minutes=1), customer_row=person)
    assert attribution.attribute_order(db, late) is None
    assert attribution.attribute_order(db, before) is None
    assert db.scalar(select(func.count()).select_from(Attribution)) == 0


def test_the_last_click_wins(db, shop):
    first, second = campaign(db, shop, name="First"), campaign(db, shop, name="Second", started_at=T0 + DAY)
    person, sub = shopper(db, shop)
    click(db, shop, first, sub, T0 + 2 * HOUR)
    click(db, shop, second, sub, T0 + DAY + HOUR)
    click(db, shop, first, sub, T0 + DAY + 3 * HOUR)  # clicked the first campaign's link again, later
    placed = order(db, shop, at=T0 + 2 * DAY, customer_row=person)
    attribution.attribute_order(db, placed)
    assert credited(db, placed)[:3] == (first.id, sub.id, "click")
    between = order(db, shop, at=T0 + DAY + 2 * HOUR, customer_row=person)
    attribution.attribute_order(db, between)
    assert credited(db, between)[:3] == (second.id, sub.id, "click")


def test_a_subscriber_with_the_orders_phone_counts_even_without_a_customer_link(db, shop):
    camp = campaign(db, shop)
    sub = recipient(db, shop, phone="+12125550123")
    click(db, shop, camp, sub, T0 + HOUR)
    guest = order(db, shop, at=T0 + 2 * HOUR, phone="+12125550123")
    attribution.attribute_order(db, guest)
    assert credited(db, guest)[:3] == (camp.id, sub.id, "click")


def test_the_landing_sites_ref_credits_a_guest_checkout(db, shop):
    camp = campaign(db, shop)
    sub = recipient(db, shop)
    row = click(db, shop, camp, sub, T0 + HOUR)
    code = db.get(Link, row.link_id).code
    guest = order(db, shop, at=T0 + 3 * HOUR, landing=f"/products/hat?utm_source=sms&kn={code}")
    attribution.attribute_order(db, guest)
    assert credited(db, guest)[:3] == (camp.id, sub.id, "click")
    stale = order(db, shop, at=T0 + HOUR + 6 * DAY, landing=f"/products/hat?kn={code}")
    assert attribution.attribute_order(db, stale) is None  # the ref's click is outside the window too


def test_another_shops_clicks_never_count(db, shop):
    other = make_shop("beta.myshopify.com")
    theirs = campaign(db, other, name="Beta")
    their_sub = recipient(db, other, phone="+12125550777")
    row = click(db, other, theirs, their_sub, T0 + HOUR)
    their_code = db.get(Link, row.link_id).code
    campaign(db, shop, name="Ours")  # our shop has campaigns, just no click by this buyer
    person = customer(db, shop)
    recipient(db, shop, customer_row=person, phone="+12125550777")  # same phone, our subscriber
    placed = order(db, shop, at=T0 + 2 * HOUR, customer_row=person, phone="+12125550777",
                   landing=f"/?kn={their_code}")
    assert attribution.attribute_order(db, placed) is None


def test_test_orders_are_never_credited(db, shop):
    camp = campaign(db, shop)
    person, sub = shopper(db, shop)
    click(db, shop, camp, sub, T0 + HOUR)
    assert attribution.attribute_order(db, order(db, shop, at=T0 + 2 * HOUR, customer_row=person, test=True)) is None


# ---------------------------------------------------------------------------------------------- by code

def test_a_shared_code_credits_the_campaign_and_beats_a_click(db, shop):
    coded = campaign(db, shop, name="Coded", discount_mode="shared", discount_code="SPRING20")
    clicked = campaign(db, shop, name="Clicked", started_at=T0 + HOUR)
    person, sub = shopper(db, shop)
    message(db, coded, sub)
    click(db, shop, clicked, sub, T0 + 2 * HOUR)
    placed = order(db, shop, at=T0 + 3 * HOUR, customer_row=person, codes=["spring20"])
    attribution.attribute_order(db, placed)
    assert credited(db, placed)[:3] == (coded.id, sub.id, "discount_code")
    stranger = order(db, shop, at=T0 + 30 * DAY, codes=["Spring20"])  # no window, no subscriber needed
    attribution.attribute_order(db, stranger)
    assert credited(db, stranger)[:3] == (coded.id, None, "discount_code")


def test_a_shared_code_goes_to_the_latest_campaign_started_before_the_order(db, shop):
    old = campaign(db, shop, name="Old", discount_mode="shared", discount_code="VIP")
    new = campaign(db, shop, name="New", discount_mode="shared", discount_code="VIP", started_at=T0 + 10 * DAY)
    between = order(db, shop, at=T0 + DAY, codes=["VIP"])
    after = order(db, shop, at=T0 + 11 * DAY, codes=["VIP"])
    before = order(db, shop, at=T0 - DAY, codes=["VIP"])
    attribution.attribute_orders(db, shop, [between.id, after.id, before.id])
    assert credited(db, between)[0] == old.id
    assert credited(db, after)[0] == new.id
    assert credited(db, before) is None


def test_a_unique_code_credits_its_recipients_campaign(db, shop):
    camp = campaign(db, shop, discount_mode="unique", discount_code="KN-")
    sub = recipient(db, shop)
    other = recipient(db, shop)
    message(db, camp, sub, discount_code="KN-7Q2XW")
    message(db, camp, other, discount_code="KN-AAAAA")
    placed = order(db, shop, at=T0 + 9 * DAY, codes=["OTHER", "kn-7q2xw"])
    attribution.attribute_order(db, placed)
    assert credited(db, placed)[:3] == (camp.id, sub.id, "discount_code")


def test_another_shops_codes_never_count(db, shop):
    other = make_shop("beta.myshopify.com")
    campaign(db, other, name="Beta", discount_mode="shared", discount_code="SAME")
    campaign(db, shop, name="Ours")
    placed = order(db, shop, at=T0 + HOUR, codes=["SAME"])
    assert attribution.attribute_order(db, placed) is None


# ---------------------------------------------------------------------------------------------- ingestion

def test_ingestion_attributes_once_and_a_cancelled_or_deleted_order_loses_its_credit(db, shop):
    camp = campaign(db, shop, discount_mode="shared", discount_code="SPRING20")
    row = OrderRow(shopify_id=555, created_at=T0 + HOUR, updated_at=T0 + HOUR, total_price=Decimal("42.50"),
                   discount_codes=[{"code": "SPRING20"}])
    [order_id] = upsert_orders(db, shop, [row])
    placed = db.get(Order, order_id)
    assert credited(db, placed) == (camp.id, None, "discount_code", Decimal("42.5000"))

    refunded = OrderRow(**{**row.__dict__, "updated_at": T0 + 2 * HOUR, "current_total_price": Decimal("12.50")})
    upsert_orders(db, shop, [refunded])
    attribution.attribute_order(db, placed)  # idempotent: still one row
    db.commit()
    assert db.scalar(select(func.count()).select_from(Attribution)) == 1
    assert credited(db, placed)[3] == Decimal("12.5000")

    cancelled = OrderRow(**{**row.__dict__, "updated_at": T0 + 3 * HOUR, "cancelled_at": T0 + 3 * HOUR})
    upsert_orders(db, shop, [cancelled])
    assert credited(db, placed) is None

    again = OrderRow(**{**row.__dict__, "updated_at": T0 + 4 * HOUR})  # un-cancelled (re-opened)
    upsert_orders(db, shop, [again])
    assert credited(db, placed) is not None
    delete_order(db, shop, 555)
    assert db.scalar(select(func.count()).select_from(Attribution)) == 0


def test_ingestion_rechecks_the_subscriber_a_code_is_credited_to(db, shop, segment_rechecks):
    """A friend's guest order with a recipient's unique code is the recipient's `used_discount` event: the
    recipient is re-checked when it is credited, and again when the order is cancelled and loses the credit."""
    camp = campaign(db, shop, discount_mode="unique", discount_code="KN-")
    sub = recipient(db, shop)
    message(db, camp, sub, discount_code="KN-FRIEND")
    row = OrderRow(shopify_id=557, created_at=T0 + HOUR, updated_at=T0 + HOUR, discount_codes=[{"code": "kn-friend"}])
    upsert_orders(db, shop, [row])
    assert segment_rechecks == [(shop.id, [sub.id])]
    upsert_orders(db, shop, [OrderRow(**{**row.__dict__, "updated_at": T0 + 2 * HOUR, "cancelled_at": T0 + 2 * HOUR})])
    assert segment_rechecks[-1] == (shop.id, [sub.id]) and len(segment_rechecks) == 2


def test_ingestion_without_any_campaign_costs_nothing(db, shop):
    upsert_orders(db, shop, [OrderRow(shopify_id=556, created_at=T0, updated_at=T0, discount_codes=[{"code": "X"}])])
    assert db.scalar(select(func.count()).select_from(Attribution)) == 0


# ---------------------------------------------------------------------------------------------- recompute

def test_recompute_after_a_window_change(db, shop):
    camp = campaign(db, shop)
    coded = campaign(db, shop, name="Coded", discount_mode="shared", discount_code="FOREVER")
    person, sub = shopper(db, shop)
    click(db, shop, camp, sub, T0 + HOUR)
    one_day = order(db, shop, at=T0 + HOUR + DAY - HOUR, customer_row=person)
    three_days = order(db, shop, at=T0 + HOUR + 3 * DAY, customer_row=person)
    ten_days = order(db, shop, at=T0 + HOUR + 10 * DAY, customer_row=person)
    by_code = order(db, shop, at=T0 + 40 * DAY, codes=["FOREVER"])
    before_any = order(db, shop, at=T0 - DAY, customer_row=person)
    assert attribution.recompute(db, shop) == 3
    assert [credited(db, o) and credited(db, o)[0] for o in (one_day, three_days, ten_days, by_code, before_any)] == [
        camp.id, camp.id, None, coded.id, None]

    shop.attribution_window_days = 2
    db.commit()
    assert attribution.recompute(db, shop) == 2
    assert [credited(db, o) and credited(db, o)[0] for o in (one_day, three_days, ten_days, by_code)] == [
        camp.id, None, None, coded.id]

    shop.attribution_window_days = 14
    db.commit()
    assert attribution.recompute(db, shop) == 4
    assert db.scalar(select(func.count()).select_from(Attribution)) == 4


def test_recompute_handles_more_orders_than_one_batch(db, shop, monkeypatch):
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "ATTRIBUTION_BATCH_SIZE", 3)
    camp = campaign(db, shop)
    person, sub = shopper(db, shop)
    click(db, shop, camp, sub, T0 + HOUR)
    placed = [order(db, shop, at=T0 + HOUR + n * HOUR, customer_row=person) for n in range(1, 8)]
    assert attribution.recompute(db, shop) == 7
    assert {credited(db, o)[0] for o in placed} == {camp.id}


def test_recompute_leaves_another_shop_alone(db, shop):
    other = make_shop("beta.myshopify.com")
    theirs = campaign(db, other, name="Beta", discount_mode="shared", discount_code="B")
    their_order = order(db, other, at=T0 + HOUR, codes=["B"])
    attribution.attribute_order(db, their_order)
    db.commit()
    campaign(db, shop)
    attribution.recompute(db, shop)
    assert credited(db, their_order)[0] == theirs.id
