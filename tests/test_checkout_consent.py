"""Checkout consent both ways: SMS consent ticked at a Shopify checkout (checkouts/create|update) or reported by
customers_marketing_consent/update becomes a Checkout subscriber, and every opt-in and opt-out made in Kinnekt is
written to the customer in Shopify (customerSmsMarketingConsentUpdate, at the fake Shopify), without bouncing back."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from kinnekt.db import utcnow
from kinnekt.queue import get_queue
from kinnekt.models import Checkout, Customer, Message, Subscriber, SubscriptionEvent
from kinnekt.subscribers import optin
from tests import factories
from tests import shopify_payloads as sp
from tests.fake_shopify import connect

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


# --- consent made here, written back to Shopify (customerSmsMarketingConsentUpdate) ----------------------------

PHONE = "+16135550142"


@pytest.fixture
def connected(db, fake_shopify, shop):
    """The shop, connected to the fake Shopify, with one customer there and here (shopify id 640, PHONE)."""
    shop.double_opt_in, shop.checkout_collection = False, True
    db.commit()
    connect(fake_shopify, shop)
    fake_shopify.shop(shop.domain).add_customer(customer_id=640, phone=PHONE)
    factories.customer(db, shop, shopify_id=640, phone=PHONE, first_name="Ann", country_code="CA")
    return shop


def writes(fake_shopify, shop) -> list[dict]:
    """The consent objects the fake Shopify received, in order."""
    assert get_queue().drain(20)
    return [w["smsMarketingConsent"] for w in fake_shopify.shop(shop.domain).consent_writes]


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_keyword_opt_in_and_stop_of_a_customer_are_written_to_shopify(db, fake_shopify, connected):
    sub = optin.subscribe(db, connected, PHONE, source="keyword", consent_text="Texted JOIN")
    [written] = writes(fake_shopify, connected)
    assert written == {"marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                       "consentUpdatedAt": stamp(sub.subscribed_at)}
    assert fake_shopify.shop(connected.domain).consent_writes[0]["customerId"] == "gid://shopify/Customer/640"
    node = fake_shopify.shop(connected.domain).customers[640]
    assert node["smsMarketingConsent"]["marketingState"] == "SUBSCRIBED"
    db.expire_all()
    assert db.scalar(select(Customer.sms_consent_state)) == "subscribed"  # what Shopify holds now

    optin.unsubscribe(db, sub, reason='Texted "STOP"', source="sms")
    assert writes(fake_shopify, connected)[1:] == [
        {"marketingState": "UNSUBSCRIBED", "consentUpdatedAt": stamp(sub.unsubscribed_at)}]
    optin.resubscribe(db, sub, source="sms", detail='Texted "START"')
    assert [w["marketingState"] for w in writes(fake_shopify, connected)] == ["SUBSCRIBED", "UNSUBSCRIBED",
                                                                             "SUBSCRIBED"]


def test_double_opt_in_writes_nothing_while_pending_then_a_confirmed_opt_in(db, fake_shopify, connected):
    sub = optin.subscribe(db, connected, PHONE, source="mobile_popup", consent_text="popup", double_opt_in=True,
                          send_confirmation=False)
    assert writes(fake_shopify, connected) == []
    optin.confirm(db, sub)
    assert writes(fake_shopify, connected) == [{"marketingState": "SUBSCRIBED",
                                                "marketingOptInLevel": "CONFIRMED_OPT_IN",
                                                "consentUpdatedAt": stamp(sub.subscribed_at)}]


def test_a_subscriber_without_a_customer_writes_nothing(db, fake_shopify, connected):
    optin.subscribe(db, connected, "+16135550177", source="keyword", consent_text="Texted JOIN")
    assert writes(fake_shopify, connected) == []


def test_the_webhook_our_own_write_causes_changes_and_writes_nothing(deliver, db, fake_shopify, connected):
    sub = optin.subscribe(db, connected, PHONE, source="keyword", consent_text="Texted JOIN")
    assert len(writes(fake_shopify, connected)) == 1
    optin.unsubscribe(db, sub, reason='Texted "STOP"', source="sms")
    assert len(writes(fake_shopify, connected)) == 2
    events = count(db, SubscriptionEvent)
    customer = db.scalar(select(Customer))
    # Shopify announces each write; the first (subscribed) is older than the opt-out and the second is ours
    for state, at in (("subscribed", sub.subscribed_at), ("unsubscribed", sub.unsubscribed_at)):
        deliver("customers_marketing_consent/update", sp.marketing_consent(
            640, phone=PHONE, state=state, consent_updated_at=at.replace(microsecond=0)))
    assert count(db, SubscriptionEvent) == events
    assert db.scalar(select(Subscriber.status)) == "unsubscribed"
    assert len(writes(fake_shopify, connected)) == 2

    # the echo of an opt-in, even when it arrives before the job stored what Shopify holds
    optin.resubscribe(db, sub, source="sms", detail="START")
    assert len(writes(fake_shopify, connected)) == 3
    db.expire_all()
    customer = db.get(Customer, customer.id)
    customer.sms_consent_state, customer.sms_consent_updated_at = "unsubscribed", sub.unsubscribed_at
    db.commit()
    events = count(db, SubscriptionEvent)
    sub = db.scalar(select(Subscriber))
    deliver("customers_marketing_consent/update", sp.marketing_consent(
        640, phone=PHONE, state="subscribed", consent_updated_at=sub.subscribed_at.replace(microsecond=0)))
    assert count(db, SubscriptionEvent) == events
    assert len(writes(fake_shopify, connected)) == 3


def test_consent_that_came_from_shopify_is_not_written_back(deliver, db, fake_shopify, connected):
    later = utcnow() + dt.timedelta(seconds=5)
    deliver("customers_marketing_consent/update", sp.marketing_consent(
        640, phone=PHONE, state="subscribed", consent_updated_at=later))
    assert db.scalar(select(Subscriber.source)) == "checkout"
    deliver("customers_marketing_consent/update", sp.marketing_consent(
        640, phone=PHONE, state="unsubscribed", consent_updated_at=later + dt.timedelta(seconds=1)))
    assert db.scalar(select(Subscriber.status)) == "unsubscribed"
    assert writes(fake_shopify, connected) == []
    deliver("checkouts/create", ticked(phone=PHONE, created_at=later + dt.timedelta(seconds=2)))
    assert db.scalar(select(Subscriber.status)) == "subscribed"
    assert writes(fake_shopify, connected) == []


def test_shopify_refusing_the_write_is_reported_and_nothing_stored(db, fake_shopify, connected):
    from kinnekt.shopify.tasks import write_back_sms_consent
    del fake_shopify.shop(connected.domain).customers[640]  # deleted in Shopify meanwhile
    sub = optin.subscribe(db, connected, PHONE, source="keyword", consent_text="Texted JOIN")
    assert len(writes(fake_shopify, connected)) == 1
    assert write_back_sms_consent(sub.id) == "refused: Customer does not exist"
    db.expire_all()
    assert db.scalar(select(Customer.sms_consent_state)) is None


def test_running_the_job_again_writes_nothing_new(db, fake_shopify, connected):
    from kinnekt.shopify.tasks import write_back_sms_consent
    sub = optin.subscribe(db, connected, PHONE, source="keyword", consent_text="Texted JOIN")
    assert len(writes(fake_shopify, connected)) == 1
    assert write_back_sms_consent(sub.id) == "already in Shopify"
    assert len(writes(fake_shopify, connected)) == 1


def test_an_opt_out_made_while_the_opt_in_is_on_its_way_is_written_too(db, fake_shopify, connected):
    """The STOP's own job cannot be queued beside the running one: the running job writes it in its next round."""
    from kinnekt.shopify.tasks import write_back_sms_consent
    sub = optin.subscribe(db, connected, PHONE, source="keyword", consent_text="Texted JOIN")
    assert len(writes(fake_shopify, connected)) == 1
    customer = db.scalar(select(Customer))
    customer.sms_consent_state, customer.sms_consent_updated_at = None, None  # as before the first write
    db.commit()
    fake_shopify.shop(connected.domain).consent_writes.clear()
    stopped = threading.Event()

    def stop_meanwhile(_data):
        if stopped.is_set():
            return
        stopped.set()
        with _own_session() as other:
            optin.unsubscribe(other, other.get(Subscriber, sub.id), reason='Texted "STOP"', source="sms")

    fake_shopify.on_consent_write = stop_meanwhile
    assert write_back_sms_consent(sub.id).startswith("written")  # the STOP's own job may be the one writing it
    assert [w["marketingState"] for w in writes(fake_shopify, connected)] == ["SUBSCRIBED", "UNSUBSCRIBED"]
    assert fake_shopify.shop(connected.domain).customers[640]["smsMarketingConsent"]["marketingState"] == \
        "UNSUBSCRIBED"


def _own_session():
    """A session of its own (another thread's work, as a second worker would do it)."""
    from sqlalchemy.orm import Session as OrmSession
    from kinnekt.db import engine
    return OrmSession(engine(), expire_on_commit=False)


def test_bulk_and_reconcile_nodes_are_read_from_sms_marketing_consent():
    from kinnekt.shopify import mapping
    assert "smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }" in mapping.CUSTOMER_FIELDS
    assert "marketingState" not in mapping.CUSTOMER_FIELDS.split("smsMarketingConsent")[0]
    row = mapping.customer_row({"id": "gid://shopify/Customer/7", "defaultPhoneNumber": {"phoneNumber": PHONE},
                                "smsMarketingConsent": {"marketingState": "SUBSCRIBED",
                                                        "marketingOptInLevel": "CONFIRMED_OPT_IN",
                                                        "consentUpdatedAt": "2026-11-02T10:00:00Z"}})
    assert (row.sms_consent_state, row.sms_consent_opt_in_level, row.sms_consent_updated_at) == (
        "subscribed", "confirmed_opt_in", dt.datetime(2026, 11, 2, 10, tzinfo=UTC))


def test_an_imported_customer_is_written_as_subscribed_and_the_other_rows_are_not(db, fake_shopify, connected):
    from kinnekt.subscribers import importing
    report = importing.import_csv(db, connected, file_bytes=f"phone\n{PHONE}\n+16135550178\n".encode(), attested=True)
    assert report.imported == 2
    [written] = writes(fake_shopify, connected)
    assert (written["marketingState"], written["marketingOptInLevel"]) == ("SUBSCRIBED", "SINGLE_OPT_IN")
    assert fake_shopify.shop(connected.domain).consent_writes[0]["customerId"] == "gid://shopify/Customer/640"
