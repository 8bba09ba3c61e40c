"""Shopify SMS marketing consent (checkout, customer sync, consent webhooks) applied to subscribers.

States and what they do (Shopify's `updated_at` older than our last consent change is ignored, so a
stale webhook never undoes a newer opt-in or opt-out made here):
- subscribed: with Checkout collection on, the number becomes a subscriber with source Checkout,
  subscribed at once (Shopify already collected and, where it applies, confirmed the consent);
- pending (Shopify's own double opt-in not confirmed yet): a pending subscriber, and no text from us;
- unsubscribed (the person withdrew consent in Shopify) and redacted (erased): unsubscribed here,
  whatever the source;
- not_subscribed and invalid: unsubscribed here only when the consent we hold came from Shopify
  (source Checkout); a keyword or popup subscriber whose customer never opted in at checkout keeps
  the consent they gave us.

Checkout payloads (`checkouts/create|update`, `buyer_accepts_sms_marketing` with `sms_marketing_phone`):
with Checkout collection on, a ticked box subscribes the number with source Checkout, like a
"subscribed" consent above. An unticked box is not a withdrawal (the person only did not opt in during
that checkout), so it changes nothing. The checkout's start time dates the consent: a checkout begun
before our last consent change (say a STOP texted since) is not a newer opt-in, however often Shopify
sends updates of it.

The consent webhook that Kinnekt's own write-back causes (kinnekt.shopify.consent) reports the subscriber's own
state dated the second of its change here: it changes nothing and logs nothing.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Customer, Shop, Subscriber
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.subscribers import optin, phones

log = logging.getLogger(__name__)

STATES = ("subscribed", "not_subscribed", "unsubscribed", "pending", "redacted", "invalid")
WITHDRAWN_ANY_SOURCE = ("unsubscribed", "redacted")
WITHDRAWN_CHECKOUT_ONLY = ("not_subscribed", "invalid")


def apply_sms_consent(session: OrmSession, shop: Shop, customer: Customer | None, *, state: str,
                      phone: str | None, updated_at: dt.datetime | None, opt_in_level: str | None = None
                      ) -> Subscriber | None:
    """Apply one Shopify SMS consent state to the subscriber of that phone; returns it (None: nothing to do)."""
    state = (state or "").strip().lower()
    if state not in STATES:
        raise ValueError(f"unknown SMS consent state {state!r}")
    raw = phone or (customer.phone if customer is not None else None)
    if not raw:
        return None
    region = customer.country_code if customer is not None else None
    try:
        info = phones.normalise(raw, region, prefer_zone=shop.timezone)
    except phones.InvalidPhone as exc:
        log.info("shop %s: Shopify consent for an unusable phone ignored: %s", shop.id, exc)
        return None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id,
                                                         Subscriber.phone == info.e164))
    if subscriber is not None and (_older_than_ours(updated_at, subscriber) or _our_own(state, updated_at, subscriber)):
        return subscriber

    if state in ("subscribed", "pending"):
        if not shop.checkout_collection:
            return subscriber
        level = f", {opt_in_level.lower()}" if opt_in_level else ""
        when = f" on {updated_at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC" if updated_at else ""
        return optin.subscribe(
            session, shop, info.e164, source="checkout", customer=customer,
            consent_text=f"SMS marketing consent collected by Shopify ({state}{level}){when}",
            double_opt_in=state == "pending", send_confirmation=False,
            first_name=customer.first_name if customer is not None else None)

    if subscriber is None or subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        return subscriber
    if state in WITHDRAWN_ANY_SOURCE or (state in WITHDRAWN_CHECKOUT_ONLY and subscriber.source == "checkout"):
        return optin.unsubscribe(session, subscriber, reason=f"SMS consent {state.replace('_', ' ')} in Shopify",
                                 source="checkout")
    return subscriber


def _older_than_ours(updated_at: dt.datetime | None, subscriber: Subscriber) -> bool:
    """True when Shopify's consent change predates the last consent change we recorded."""
    if updated_at is None:
        return False
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=dt.timezone.utc)
    ours = [t for t in (subscriber.consent_at, subscriber.subscribed_at, subscriber.unsubscribed_at) if t]
    return bool(ours) and updated_at < max(ours)


def _our_own(state: str, updated_at: dt.datetime | None, subscriber: Subscriber) -> bool:
    """True when Shopify reports the consent Kinnekt wrote (kinnekt.shopify.consent): the subscriber's own state,
    dated the same second as its change here. Such an echo changes and logs nothing."""
    if updated_at is None:
        return False
    ours = {"subscribed": (SubscriberStatus.SUBSCRIBED, subscriber.subscribed_at),
            "unsubscribed": (SubscriberStatus.UNSUBSCRIBED, subscriber.unsubscribed_at)}.get(state)
    if ours is None or subscriber.status != ours[0] or ours[1] is None:
        return False
    return _second(ours[1]) == _second(updated_at)


def _second(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0)


def apply_checkout_consent(session: OrmSession, shop: Shop, customer: Customer | None, *, accepted: bool,
                           phone: str | None, token: str, started_at: dt.datetime | None) -> Subscriber | None:
    """Apply the SMS consent box of one Shopify checkout; returns the subscriber (None: nothing to do)."""
    if not accepted or not shop.checkout_collection:
        return None
    raw = phone or (customer.phone if customer is not None else None)
    if not raw:
        return None
    try:
        info = phones.normalise(raw, customer.country_code if customer is not None else None,
                                prefer_zone=shop.timezone)
    except phones.InvalidPhone as exc:
        log.info("shop %s: checkout %s consent for an unusable phone ignored: %s", shop.id, token, exc)
        return None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id,
                                                         Subscriber.phone == info.e164))
    if subscriber is not None and _older_than_ours(started_at, subscriber):
        return subscriber
    return optin.subscribe(
        session, shop, info.e164, source="checkout", customer=customer,
        consent_text=f"Ticked the SMS marketing box at Shopify checkout {token}",
        double_opt_in=False, send_confirmation=False,
        first_name=customer.first_name if customer is not None else None)
