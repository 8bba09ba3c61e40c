"""SMS consent ticked at a Shopify checkout (checkouts/create|update) becomes a Checkout subscriber."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from kinnekt.db import utcnow
from kinnekt.models import Checkout, Customer, Message, Subscriber, SubscriptionEvent
from kinnekt.subscribers import optin
from tests import shopify_payloads as sp

pytestmark = pytest.mark.usefixtures("settled_jobs")

UTC = dt.timezone.utc


@pytest.fixture
def collecting(db, shop):
    shop.checkout_collection = True
    db.commit()
    return shop


def ticked(token=None, *, phone="+16135550142", customer_id=None, created_at=None, updated_at=None, accepted=True):
    payload = sp.checkout(token, customer_payload=sp.order_customer(customer_id) if customer_id else None,
                          created_at=created_at, updated_at=updated_at)
    payload.update(buyer_accepts_sms_marketing=accepted, sms_marketing_phone=phone)
    return payload


def count(db, model) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model))


def test_ticked_box_subscribes_with_source_checkout_and_no_confirmation_text(deliver, db, collecting):
    cid = sp.next_id()
    payload = ticked(customer_id=cid, phone="+1 613 555 0142")
    deliver("checkouts/create", payload)
    subscriber = db.scalar(select(Subscriber))
    customer = db.scalar(select(Customer).where(Customer.shopify_id == cid))
    assert (subscriber.phone, subscriber.status, subscriber.source, subscriber.customer_id) == (
        "+16135550142", "subscribed", "checkout", customer.id)
    assert subscriber.consent_text == f"Ticked the SMS marketing box at Shopify checkout {payload['token']}"
    assert subscriber.first_name == "Bob"
    assert count(db, Message) == 0
    assert count(db, Checkout) == 1


def test_sms_marketing_phone_wins_over_the_contact_phone(deliver, db, collecting):
    payload = ticked(phone="+16135550199")
    payload["phone"] = "+16135550100"
    deliver("checkouts/create", payload)
    assert db.scalar(select(Subscriber.phone)) == "+16135550199"


def test_without_checkout_collection_nothing_is_subscribed(deliver, db, shop):
    deliver("checkouts/create", ticked())
    assert count(db, Subscriber) == 0 and count(db, Checkout) == 1


def test_unticked_box_changes_nothing(deliver, db, collecting):
    optin.subscribe(db, collecting, "+16135550142", source="checkout", consent_text="earlier", double_opt_in=False)
    deliver("checkouts/create", ticked(accepted=False))
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.status, subscriber.source) == ("subscribed", "checkout")
    assert count(db, SubscriptionEvent) == 1


def test_unusable_phone_is_ignored_and_the_checkout_still_stored(deliver, db, collecting):
    deliver("checkouts/create", ticked(phone="12"))
    assert count(db, Subscriber) == 0 and count(db, Checkout) == 1


def test_a_keyword_subscriber_keeps_its_source_and_the_consent_is_logged(deliver, db, collecting):
    optin.subscribe(db, collecting, "+16135550142", source="keyword", consent_text="Texted JOIN", double_opt_in=False)
    deliver("checkouts/create", ticked(created_at=utcnow() + dt.timedelta(seconds=1)))
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.status, subscriber.source) == ("subscribed", "keyword")
    assert db.scalars(select(SubscriptionEvent.kind).order_by(SubscriptionEvent.id)).all() == ["subscribed", "consent"]


def test_a_pending_popup_subscriber_is_subscribed_by_checkout_consent(deliver, db, collecting):
    optin.subscribe(db, collecting, "+16135550142", source="mobile_popup", consent_text="popup", double_opt_in=True,
                    send_confirmation=False)
    start = utcnow() + dt.timedelta(seconds=1)
    deliver("checkouts/create", ticked(created_at=start))
    assert db.scalar(select(Subscriber.status)) == "subscribed"


def test_a_checkout_begun_before_a_stop_never_resubscribes_but_a_new_one_does(deliver, db, collecting):
    began = utcnow() - dt.timedelta(minutes=30)
    token = "tok-before-stop"
    deliver("checkouts/create", ticked(token, created_at=began))
    subscriber = db.scalar(select(Subscriber))
    optin.unsubscribe(db, subscriber, reason='Texted "STOP"', source="sms")
    # Shopify keeps sending updates of the old checkout, still with the box ticked
    deliver("checkouts/update", ticked(token, created_at=began, updated_at=utcnow() + dt.timedelta(seconds=1)))
    db.expire_all()
    assert db.scalar(select(Subscriber.status)) == "unsubscribed"
    # a checkout begun after the STOP where the box is ticked again is a new opt-in
    deliver("checkouts/create", ticked("tok-after-stop", created_at=utcnow() + dt.timedelta(seconds=2)))
    db.expire_all()
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.status, subscriber.source) == ("subscribed", "checkout")


def test_older_update_of_a_checkout_is_ignored(deliver, db, collecting):
    began = dt.datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    deliver("checkouts/create", ticked("tok", created_at=began, updated_at=began + dt.timedelta(minutes=5),
                                       accepted=False))
    deliver("checkouts/update", ticked("tok", created_at=began, updated_at=began + dt.timedelta(minutes=1)))
    assert count(db, Subscriber) == 0


def test_checkout_consent_is_per_shop(deliver, db, collecting, other_shop):
    other_shop.checkout_collection = True
    db.commit()
    deliver("checkouts/create", ticked())
    assert db.scalars(select(Subscriber.shop_id)).all() == [collecting.id]
