"""SMS marketing consent written back to Shopify (customerSmsMarketingConsentUpdate), so that the merchant's
customer records agree with Kinnekt.

Every opt-in and opt-out made in Kinnekt (a keyword, a confirmation, START, STOP, the merchant) of a subscriber
linked to a customer is written; consent that came from Shopify (source Checkout: webhooks, bulk sync, checkout
payloads) is not, so nothing bounces back and forth. What is written is the subscriber's state when the job runs
(the newest one wins), dated by the change: subscribed (SINGLE_OPT_IN, or CONFIRMED_OPT_IN after a "Reply Y"
confirmation) at its `subscribed_at`, unsubscribed at its `unsubscribed_at`; a pending sign-up is not consent
yet and writes nothing. After a write the customer row holds what Shopify now holds, so the
customers_marketing_consent/update webhook that the write causes is "the same consent again" and is ignored
(kinnekt.shopify.ingest.customers); kinnekt.subscribers.checkout also recognises it by its state and second.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Customer, Shop, Subscriber, SubscriptionEvent
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.shopify.graphql import client_for, gid

log = logging.getLogger(__name__)

MUTATION = """
mutation KinnektSmsConsent($input: CustomerSmsMarketingConsentUpdateInput!) {
  customerSmsMarketingConsentUpdate(input: $input) {
    customer { id smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } }
    userErrors { field message }
  }
}
"""

OPT_IN_KINDS = ("subscribed", "confirmed", "resubscribed")
"""SubscriptionEvent kinds that start a subscription (the newest tells the opt-in level)."""


@dataclass(frozen=True)
class Consent:
    """One SMS consent as Shopify's CustomerSmsMarketingConsentInput takes it."""

    state: str          # SUBSCRIBED or UNSUBSCRIBED
    level: str | None   # SINGLE_OPT_IN or CONFIRMED_OPT_IN (subscribed only)
    at: dt.datetime     # aware UTC, whole seconds (what Shopify keeps and sends back)

    def as_input(self) -> dict:
        """The `smsMarketingConsent` input object."""
        value = {"marketingState": self.state, "consentUpdatedAt": self.at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if self.level:
            value["marketingOptInLevel"] = self.level
        return value


def whole_second(moment: dt.datetime) -> dt.datetime:
    """An instant as aware UTC without its fraction of a second (Shopify's DateTime precision)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0)


def desired(session: OrmSession, subscriber: Subscriber) -> Consent | None:
    """The consent Shopify should hold for this subscriber now (None: nothing to write, e.g. still pending)."""
    if subscriber.status == SubscriberStatus.SUBSCRIBED and subscriber.subscribed_at is not None:
        kind = session.scalar(select(SubscriptionEvent.kind).where(
            SubscriptionEvent.subscriber_id == subscriber.id, SubscriptionEvent.kind.in_(OPT_IN_KINDS))
            .order_by(SubscriptionEvent.id.desc()).limit(1))
        level = "CONFIRMED_OPT_IN" if kind == "confirmed" else "SINGLE_OPT_IN"
        return Consent("SUBSCRIBED", level, whole_second(subscriber.subscribed_at))
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED and subscriber.unsubscribed_at is not None:
        return Consent("UNSUBSCRIBED", None, whole_second(subscriber.unsubscribed_at))
    return None


def already_held(customer: Customer, consent: Consent) -> bool:
    """True when the customer row says Shopify holds this consent, or a newer one, already."""
    stored = customer.sms_consent_updated_at
    if stored is None:
        return False
    stored = whole_second(stored)
    return stored > consent.at or (stored == consent.at and customer.sms_consent_state == consent.state.lower())


def write(session: OrmSession, subscriber_id: int) -> str:
    """Write the subscriber's current consent to its Shopify customer; returns what happened (commits).

    The customer row stays locked from the read to the commit (FOR UPDATE on PostgreSQL, and a lock of this
    process), so two jobs for the same customer write once, and the webhook that the write causes waits and then
    finds the consent stored (kinnekt.shopify.ingest.customers locks the row too). Raises
    kinnekt.shopify.graphql.ShopifyError when Shopify stays unreachable through the client's retries (the job
    fails, and RQ keeps it), and kinnekt.shopify.tokens.NotConnected without a usable token.
    """
    subscriber = session.get(Subscriber, subscriber_id, populate_existing=True)
    if subscriber is None or subscriber.customer_id is None:
        session.rollback()
        return "nothing to write"
    with _held(subscriber.customer_id):
        try:
            return _write_locked(session, subscriber_id, subscriber.customer_id)
        finally:
            session.rollback()  # ends the transaction (and its row lock) on every way out; after a commit a no-op


def _write_locked(session: OrmSession, subscriber_id: int, customer_id: int) -> str:
    customer = session.scalar(select(Customer).where(Customer.id == customer_id).with_for_update()
                              .execution_options(populate_existing=True))
    subscriber = session.get(Subscriber, subscriber_id, populate_existing=True)
    shop = session.get(Shop, subscriber.shop_id) if subscriber is not None else None
    if customer is None or shop is None or shop.is_demo or not shop.installed or \
            subscriber.customer_id != customer_id:
        return "nothing to write"
    consent = desired(session, subscriber)
    if consent is None:
        return "nothing to write"
    if already_held(customer, consent):
        return "already in Shopify"
    data = client_for(shop).query(MUTATION, {"input": {
        "customerId": gid("Customer", customer.shopify_id), "smsMarketingConsent": consent.as_input()}})
    answer = (data or {}).get("customerSmsMarketingConsentUpdate") or {}
    errors = answer.get("userErrors") or []
    if errors:
        log.warning("subscriber %s: Shopify refused the SMS consent %s: %s", subscriber_id, consent.state, errors)
        return "refused: " + "; ".join(str(e.get("message")) for e in errors)
    # What Shopify holds now; the webhook this write causes then changes nothing.
    customer.sms_consent_state = consent.state.lower()
    customer.sms_consent_updated_at = consent.at
    session.commit()
    return f"written: {consent.state.lower()}"


_locks = tuple(threading.Lock() for _ in range(64))
"""Striped: a customer's writes share one of these (a bounded set, however many customers a worker meets)."""


@contextmanager
def _held(customer_id: int) -> Iterator[None]:
    """This process's lock of one customer's consent write (SQLite has no row locks; PostgreSQL's is taken too)."""
    with _locks[customer_id % len(_locks)]:
        yield
