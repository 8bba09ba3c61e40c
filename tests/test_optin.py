"""Opt-in and opt-out: consent records, idempotency on (shop, phone), double opt-in, Shopify checkout consent."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session, utcnow
from kinnekt.models import Customer, Keyword, Message, Subscriber, SubscriptionEvent
from kinnekt.subscribers import optin
from kinnekt.subscribers.checkout import apply_sms_consent
from kinnekt.subscribers.phones import InvalidPhone
from tests import factories
from tests.conftest import make_shop

PHONE = "+447400123456"

pytestmark = pytest.mark.usefixtures("settled_jobs")


def _events(db, sub):
    return db.scalars(select(SubscriptionEvent.kind).where(SubscriptionEvent.subscriber_id == sub.id)
                      .order_by(SubscriptionEvent.id)).all()


def _count(db, model):
    return db.scalar(select(func.count()).select_from(model))


def test_keyword_signup_with_double_opt_in_is_pending_and_asked_to_confirm(db, segment_rechecks):
    shop = make_shop(double_opt_in=True)
    keyword = Keyword(shop_id=shop.id, word="SALE", reply_text="Here is 10% off: SALE10")
    db.add(keyword)
    db.commit()
    sub = optin.subscribe(db(), shop, PHONE, source="keyword", keyword=keyword,
                          consent_text='Texted "SALE" to 15550100200', consent_message_id="0A0000001")
    assert (sub.status, sub.source, sub.keyword, sub.keyword_id) == ("pending", "keyword", "SALE", keyword.id)
    assert sub.consent_at is not None and sub.consent_message_id == "0A0000001"
    assert sub.consent_text == 'Texted "SALE" to 15550100200' and sub.subscribed_at is None
    assert (sub.country, sub.carrier, sub.timezone) == ("GB", "Three", "Europe/London")
    assert _events(db, sub) == ["pending"]
    [message] = db.scalars(select(Message)).all()
    assert message.kind == "confirmation" and "Reply Y to confirm" in message.body
    assert segment_rechecks == [(shop.id, [sub.id])]


def test_confirm_subscribes_once(db, segment_rechecks):
    shop = make_shop(double_opt_in=True)
    sub = optin.subscribe(db(), shop, PHONE, source="mobile_popup", consent_text="Popup text v1",
                          consent_ip="203.0.113.9")
    assert sub.status == "pending" and sub.consent_ip == "203.0.113.9"
    optin.confirm(db(), sub)
    optin.confirm(db(), sub)
    assert sub.status == "subscribed" and sub.subscribed_at is not None
    assert _events(db, sub) == ["pending", "confirmed"]
    assert len(segment_rechecks) == 2


def test_without_double_opt_in_subscribed_at_once_and_nothing_sent(db):
    shop = make_shop(double_opt_in=False)
    sub = optin.subscribe(db(), shop, PHONE, source="keyword", keyword="JOIN", consent_text="Texted JOIN")
    assert sub.status == "subscribed" and sub.subscribed_at is not None and sub.keyword == "JOIN"
    assert _count(db, Message) == 0
    assert _events(db, sub) == ["subscribed"]


def test_second_signup_of_the_same_number_updates_never_duplicates(db):
    shop = make_shop(double_opt_in=False)
    first = optin.subscribe(db(), shop, "+44 7400 123456", source="keyword", keyword="SALE", consent_text="SALE")
    again = optin.subscribe(db(), shop, "07400 123456", source="mobile_popup", consent_text="Popup",
                            default_region="GB", first_name="Ann")
    assert again.id == first.id and _count(db, Subscriber) == 1
    assert (again.status, again.source, again.keyword) == ("subscribed", "keyword", "SALE")  # first source kept
    assert again.first_name == "Ann"
    assert _events(db, again) == ["subscribed", "consent"]


def test_same_number_in_two_shops_is_two_subscribers(db):
    a, b = make_shop(double_opt_in=False), make_shop("beta.myshopify.com", double_opt_in=False)
    assert optin.subscribe(db(), a, PHONE, source="manual", consent_text="x").id != \
        optin.subscribe(db(), b, PHONE, source="manual", consent_text="x").id


def test_simultaneous_signups_make_one_row(app, db):
    shop = make_shop(double_opt_in=False)
    errors, ids = [], []

    def signup():
        with app.app_context():
            try:
                ids.append(optin.subscribe(Session(), shop, PHONE, source="manual", consent_text="x").id)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                Session.remove()

    threads = [threading.Thread(target=signup) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 1
    assert _count(db, Subscriber) == 1


def test_unsubscribe_and_resubscribe_with_reasons(db, segment_rechecks):
    shop = make_shop(double_opt_in=False)
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="Added by the merchant")
    optin.unsubscribe(db(), sub, reason="Asked by phone", source="merchant")
    optin.unsubscribe(db(), sub, reason="again", source="merchant")  # no change, no new event
    assert (sub.status, sub.unsubscribe_reason) == ("unsubscribed", "Asked by phone")
    assert sub.unsubscribed_at is not None and not sub.marketable
    optin.resubscribe(db(), sub, source="merchant", detail="Customer asked in store")
    assert sub.status == "subscribed" and sub.unsubscribed_at is None and sub.unsubscribe_reason is None
    assert _events(db, sub) == ["subscribed", "unsubscribed", "resubscribed"]
    assert len(segment_rechecks) == 3


def test_import_or_manual_add_never_overrides_an_opt_out(db):
    shop = make_shop(double_opt_in=False)
    sub = optin.subscribe(db(), shop, PHONE, source="keyword", consent_text="x")
    optin.unsubscribe(db(), sub, reason="Texted STOP", source="sms")
    for source in ("import", "manual"):
        with pytest.raises(optin.OptedOut):
            optin.subscribe(db(), shop, PHONE, source=source, consent_text="CSV attested by the merchant")
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "unsubscribed"
    assert _events(db, sub) == ["subscribed", "unsubscribed"]


def test_new_opt_in_by_the_person_after_an_opt_out_starts_over(db):
    shop = make_shop(double_opt_in=True)
    sub = optin.subscribe(db(), shop, PHONE, source="mobile_popup", consent_text="popup", double_opt_in=False)
    optin.unsubscribe(db(), sub, reason="STOP", source="sms")
    again = optin.subscribe(db(), shop, PHONE, source="keyword", keyword="SALE", consent_text="Texted SALE")
    assert again.id == sub.id
    assert (again.status, again.source, again.keyword, again.unsubscribed_at) == ("pending", "keyword", "SALE", None)


def test_texting_in_clears_a_suppression(db):
    shop = make_shop(double_opt_in=False)
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="x")
    optin.suppress(db(), sub, reason="Absent subscriber (permanent)")
    assert sub.suppressed_at is not None
    optin.subscribe(db(), shop, PHONE, source="keyword", consent_text="Texted SALE", consent_message_id="0B1")
    db.expire_all()
    assert db.get(Subscriber, sub.id).suppressed_at is None
    assert _events(db, sub)[-2:] == ["consent", "unsuppressed"]


def test_links_the_customer_with_that_phone(db):
    shop = make_shop(double_opt_in=False)
    customer = Customer(shop_id=shop.id, shopify_id=77, phone=PHONE, first_name="Ann")
    db.add(customer)
    db.commit()
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="x")
    assert sub.customer_id == customer.id


@pytest.mark.parametrize("kwargs, error", [
    ({"phone_raw": "12345", "source": "manual", "consent_text": "x"}, InvalidPhone),
    ({"phone_raw": "+1 555 010 0000", "source": "manual", "consent_text": "x"}, InvalidPhone),
    ({"phone_raw": PHONE, "source": "carrier-pigeon", "consent_text": "x"}, ValueError),
    ({"phone_raw": PHONE, "source": "manual", "consent_text": "  "}, ValueError),
])
def test_bad_input_saves_nothing(db, kwargs, error):
    shop = make_shop()
    with pytest.raises(error):
        optin.subscribe(db(), shop, **kwargs)
    assert _count(db, Subscriber) == 0 and _count(db, SubscriptionEvent) == 0


# --- Shopify checkout consent ----------------------------------------------------------------------

def _customer(db, shop, **fields):
    fields.setdefault("shopify_id", 501)
    return factories.customer(db, shop, phone=PHONE, first_name="Ann", country_code="GB", **fields)


def test_checkout_consent_needs_checkout_collection_on(db):
    shop = make_shop(checkout_collection=False)
    customer = _customer(db, shop)
    assert apply_sms_consent(db(), shop, customer, state="subscribed", phone=PHONE, updated_at=utcnow()) is None
    assert _count(db, Subscriber) == 0


def test_checkout_consent_subscribes_without_double_opt_in(db):
    shop = make_shop(checkout_collection=True, double_opt_in=True)
    customer = _customer(db, shop)
    sub = apply_sms_consent(db(), shop, customer, state="subscribed", phone="07400 123456",
                            updated_at=utcnow(), opt_in_level="SINGLE_OPT_IN")
    assert (sub.status, sub.source, sub.customer_id, sub.first_name) == ("subscribed", "checkout", customer.id, "Ann")
    assert "collected by Shopify" in sub.consent_text and "single_opt_in" in sub.consent_text
    assert _count(db, Message) == 0


def test_shopify_pending_is_pending_here_and_we_send_nothing(db):
    shop = make_shop(checkout_collection=True)
    sub = apply_sms_consent(db(), shop, _customer(db, shop), state="pending", phone=PHONE, updated_at=utcnow())
    assert sub.status == "pending" and _count(db, Message) == 0


def test_withdrawn_in_shopify_unsubscribes_here_without_writing_back(db):
    shop = make_shop(checkout_collection=True)
    customer = _customer(db, shop)
    sub = apply_sms_consent(db(), shop, customer, state="subscribed", phone=PHONE,
                            updated_at=utcnow() - dt.timedelta(days=1))
    sub = apply_sms_consent(db(), shop, customer, state="unsubscribed", phone=PHONE, updated_at=utcnow())
    assert sub.status == "unsubscribed" and "unsubscribed in Shopify" in sub.unsubscribe_reason
    ev = db.scalars(select(SubscriptionEvent).where(SubscriptionEvent.kind == "unsubscribed")).one()
    assert ev.source == "checkout"


def test_stale_shopify_consent_does_not_undo_a_newer_change(db):
    shop = make_shop(checkout_collection=True, double_opt_in=False)
    customer = _customer(db, shop)
    sub = optin.subscribe(db(), shop, PHONE, source="keyword", consent_text="Texted SALE", customer=customer)
    sub = apply_sms_consent(db(), shop, customer, state="unsubscribed", phone=PHONE,
                            updated_at=utcnow() - dt.timedelta(hours=1))
    assert sub.status == "subscribed"


def test_not_subscribed_in_shopify_keeps_consent_given_to_us(db):
    shop = make_shop(checkout_collection=True, double_opt_in=False)
    customer = _customer(db, shop)
    keyword_sub = optin.subscribe(db(), shop, PHONE, source="keyword", consent_text="Texted SALE")
    later = utcnow() + dt.timedelta(minutes=1)
    assert apply_sms_consent(db(), shop, customer, state="not_subscribed", phone=PHONE,
                             updated_at=later).status == "subscribed"
    other = _customer(db, shop, shopify_id=502, email="b@example.com")
    other.phone = "+447400123457"
    db.commit()
    checkout_sub = apply_sms_consent(db(), shop, other, state="subscribed", phone=None, updated_at=utcnow())
    assert checkout_sub.phone == "+447400123457"
    assert apply_sms_consent(db(), shop, other, state="not_subscribed", phone=None,
                             updated_at=later).status == "unsubscribed"
    assert apply_sms_consent(db(), shop, customer, state="redacted", phone=PHONE,
                             updated_at=later).status == "unsubscribed"
    assert keyword_sub.id != checkout_sub.id


def test_checkout_consent_bad_input(db):
    shop = make_shop(checkout_collection=True)
    customer = _customer(db, shop)
    with pytest.raises(ValueError):
        apply_sms_consent(db(), shop, customer, state="maybe", phone=PHONE, updated_at=utcnow())
    assert apply_sms_consent(db(), shop, customer, state="subscribed", phone="not a phone", updated_at=utcnow()) is None
    assert _count(db, Subscriber) == 0
