"""Opt-in and opt-out: subscribe, confirm, unsubscribe, resubscribe and suppress, each with its consent record.

Every change writes a SubscriptionEvent, commits, and queues a segment re-check. State changes are
conditional UPDATEs, so two deliveries of the same reply (a Y processed twice) change and log once.

What a second opt-in of a known number does:
- subscribed: stays as it is (first source and consent kept); the new consent is logged ("consent");
- pending: with double opt-in it stays pending and the confirmation text is sent again, without it
  the number is subscribed now;
- unsubscribed: a new opt-in from the number itself (keyword, link) or from Shopify (checkout) subscribes
  again under the new source. A web sign-up (the popup) cannot prove the number is the typist's, so it
  leaves the opt-out standing and texts the number a confirmation request instead, at most once per
  defaults.POPUP_REOPTIN_INTERVAL_DAYS (only a reply from the number subscribes it again). An import or a
  manual add never overrides an opt-out (OptedOut);
- suppressed (the carrier said the number fails): cleared only when the opt-in came as a text from
  that number, which proves it works.

A subscription or an opt-out made here of a subscriber linked to a Shopify customer is announced
(`signals.sms_consent_changed`) and written to the customer in Shopify (kinnekt.shopify.consent); one that
came from Shopify (source Checkout) is not.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.db import utcnow
from kinnekt.models import Customer, Keyword, Shop, Subscriber, SubscriptionEvent
from kinnekt.models.subscriber import SOURCES, SubscriberStatus
from kinnekt.sms import outgoing
from kinnekt.subscribers import phones

log = logging.getLogger(__name__)

EVENT_KINDS = ("pending", "subscribed", "confirmed", "consent", "unsubscribed", "resubscribed", "suppressed",
               "unsuppressed", "reoptin_asked")
"""SubscriptionEvent.kind values written here."""

WEB_SIGNUP_SOURCES = ("mobile_popup",)
"""Sources where the number is typed into a web form: nothing proves it belongs to the person typing."""

DOUBLE_OPT_IN_SOURCES = ("keyword", "mobile_popup", "shareable_link")
"""Sources where the shop's double opt-in applies by default; checkout consent is already confirmed by
Shopify, and imports / manual adds carry the merchant's attestation instead."""


class OptedOut(ValueError):
    """An import or manual add of a number that unsubscribed: only the person can opt in again."""


def confirmation_request_text(shop: Shop) -> str:
    """The double opt-in text: what a pending subscriber must answer."""
    return (f"{shop.name}: Reply Y to confirm you want to receive marketing texts from us. "
            f"Msg & data rates may apply. Reply STOP to opt out.")


def subscribe(session: OrmSession, shop: Shop, phone_raw: str, *, source: str, keyword=None, consent_text: str,
              consent_ip: str | None = None, consent_message_id: str | None = None, customer: Customer | None = None,
              double_opt_in: bool | None = None, first_name: str | None = None, default_region: str | None = None,
              send_confirmation: bool = True) -> Subscriber:
    """Create or update the shop's subscriber for this number with a consent record; see the module docstring.

    `keyword` is a Keyword or a word. `double_opt_in=None` follows the shop's setting for keyword, popup
    and link sign-ups, and is off for other sources. A pending result gets the "Reply Y to confirm"
    text unless `send_confirmation` is False. Raises InvalidPhone, OptedOut, or ValueError.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown subscription source {source!r}")
    consent_text = (consent_text or "").strip()
    if not consent_text:
        raise ValueError("a consent record needs the text the person agreed to")
    region = default_region or (customer.country_code if customer is not None else None)
    info = phones.normalise(phone_raw, region, prefer_zone=shop.timezone, lenient=consent_message_id is not None)
    if double_opt_in is None:
        double_opt_in = shop.double_opt_in and source in DOUBLE_OPT_IN_SOURCES
    keyword_row = _keyword_row(session, shop, keyword)
    keyword_word = keyword_row.word if keyword_row is not None else (keyword.strip().upper() if keyword else None)
    now = utcnow()

    sub = _find(session, shop.id, info.e164)
    created = False
    if sub is None:
        sub = Subscriber(shop_id=shop.id, phone=info.e164, source=source, status=SubscriberStatus.PENDING, sent_count=0,
                         clicks_count=0)
        try:
            with session.begin_nested():
                session.add(sub)
                session.flush()
            created = True
        except IntegrityError:  # the same number signed up at the same moment elsewhere: update that row
            sub = _find(session, shop.id, info.e164)
    previous = None if created else sub.status
    if previous == SubscriberStatus.UNSUBSCRIBED and source in ("import", "manual"):
        raise OptedOut(f"{info.e164} unsubscribed and must opt in again themselves "
                       f"(by texting a keyword or using the sign-up form).")
    if previous == SubscriberStatus.UNSUBSCRIBED and source in WEB_SIGNUP_SOURCES and consent_message_id is None:
        return _ask_opted_out(session, shop, sub, source=source,
                              detail=_consent_detail(consent_text, consent_ip, None), now=now,
                              send_confirmation=send_confirmation)

    sub.country = sub.country or info.country
    sub.carrier = sub.carrier or info.carrier
    sub.timezone = sub.timezone or info.timezone
    if first_name and not sub.first_name:
        sub.first_name = first_name.strip()[:255]
    _link_customer(session, sub, customer)
    detail = _consent_detail(consent_text, consent_ip, consent_message_id)

    if previous == SubscriberStatus.SUBSCRIBED:
        kind = "consent"
    else:
        if previous in (None, SubscriberStatus.UNSUBSCRIBED):
            sub.source = source
            sub.keyword_id = keyword_row.id if keyword_row is not None else None
            sub.keyword = keyword_word
            sub.unsubscribed_at = None
            sub.unsubscribe_reason = None
        sub.consent_at, sub.consent_text = now, consent_text
        sub.consent_ip, sub.consent_message_id = consent_ip, consent_message_id
        if double_opt_in:
            sub.status, kind = SubscriberStatus.PENDING, "pending"
        else:
            sub.status, sub.subscribed_at, kind = SubscriberStatus.SUBSCRIBED, now, "subscribed"
    session.add(SubscriptionEvent(shop_id=shop.id, subscriber=sub, kind=kind, at=now, source=source, detail=detail))
    if consent_message_id is not None and sub.suppressed_at is not None:
        sub.suppressed_at, sub.suppressed_reason = None, None
        session.add(SubscriptionEvent(shop_id=shop.id, subscriber=sub, kind="unsuppressed", at=now, source=source,
                                      detail="the number texted in, so it can receive texts"))
    session.commit()
    _changed(session, shop.id, sub.id)
    if kind == "subscribed":
        _tell_shopify(session, sub, source)
    if sub.status == SubscriberStatus.PENDING and send_confirmation:
        outgoing.queue_message(session, shop, sub, confirmation_request_text(shop), kind="confirmation")
    return sub


def _ask_opted_out(session: OrmSession, shop: Shop, sub: Subscriber, *, source: str, detail: str,
                   now, send_confirmation: bool) -> Subscriber:
    """A web sign-up of a number that opted out: its opt-out stands; text it "Reply Y" unless asked lately.

    One conditional UPDATE decides, so sign-ups at the same moment text the number once at most.
    """
    since = now - dt.timedelta(days=defaults.POPUP_REOPTIN_INTERVAL_DAYS)
    asked = _transition(session, sub, (Subscriber.status == SubscriberStatus.UNSUBSCRIBED) & or_(
        Subscriber.reoptin_asked_at.is_(None), Subscriber.reoptin_asked_at <= since), reoptin_asked_at=now)
    if not asked:
        session.commit()
        return _find(session, shop.id, sub.phone)
    session.add(SubscriptionEvent(shop_id=shop.id, subscriber_id=sub.id, kind="reoptin_asked", at=now,
                                  source=source, detail=detail))
    session.commit()
    sub = _find(session, shop.id, sub.phone)
    if send_confirmation:
        outgoing.queue_message(session, shop, sub, confirmation_request_text(shop), kind="confirmation")
    return sub


def confirm(session: OrmSession, subscriber: Subscriber) -> Subscriber:
    """A pending subscriber answered Y: subscribed now. Anything else is left as it is."""
    now = utcnow()
    changed = _transition(session, subscriber, Subscriber.status == SubscriberStatus.PENDING,
                          status=SubscriberStatus.SUBSCRIBED, subscribed_at=now)
    if changed:
        session.add(SubscriptionEvent(shop_id=subscriber.shop_id, subscriber_id=subscriber.id, kind="confirmed",
                                      at=now, source=subscriber.source, detail="replied to confirm"))
        session.commit()
        session.refresh(subscriber)
        _changed(session, subscriber.shop_id, subscriber.id)
        _tell_shopify(session, subscriber, "sms")  # a reply from the number itself
    return subscriber


def unsubscribe(session: OrmSession, subscriber: Subscriber, *, reason: str, source: str) -> Subscriber:
    """Unsubscribe now (from `source`: sms, merchant, checkout…); an opt-out made here is written back to Shopify."""
    now = utcnow()
    reason = (reason or "").strip()[:255] or "unsubscribed"
    changed = _transition(session, subscriber, Subscriber.status != SubscriberStatus.UNSUBSCRIBED,
                          status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=now, unsubscribe_reason=reason)
    if changed:
        session.add(SubscriptionEvent(shop_id=subscriber.shop_id, subscriber_id=subscriber.id, kind="unsubscribed",
                                      at=now, source=source[:16], detail=reason))
        session.commit()
        session.refresh(subscriber)
        _changed(session, subscriber.shop_id, subscriber.id)
        _tell_shopify(session, subscriber, source)
    return subscriber


def resubscribe(session: OrmSession, subscriber: Subscriber, *, source: str, detail: str | None = None
                ) -> Subscriber:
    """Subscribe an unsubscribed (or pending) subscriber again, e.g. after START or by the merchant with a reason."""
    now = utcnow()
    values = dict(status=SubscriberStatus.SUBSCRIBED, subscribed_at=now, unsubscribed_at=None, unsubscribe_reason=None)
    if source == "sms":  # the person texted from this number, so it can receive texts
        values.update(suppressed_at=None, suppressed_reason=None)
    changed = _transition(session, subscriber, Subscriber.status.in_(SubscriberStatus.NOT_SUBSCRIBED), **values)
    if changed:
        session.add(SubscriptionEvent(shop_id=subscriber.shop_id, subscriber_id=subscriber.id, kind="resubscribed",
                                      at=now, source=source[:16], detail=detail))
        session.commit()
        session.refresh(subscriber)
        _changed(session, subscriber.shop_id, subscriber.id)
        _tell_shopify(session, subscriber, source)
    return subscriber


def suppress(session: OrmSession, subscriber: Subscriber, *, reason: str, source: str = "carrier") -> Subscriber:
    """Stop sending to a number that fails permanently (absent, barred, opted out at the carrier)."""
    now = utcnow()
    changed = _transition(session, subscriber, Subscriber.suppressed_at.is_(None),
                          suppressed_at=now, suppressed_reason=reason[:255])
    if changed:
        session.add(SubscriptionEvent(shop_id=subscriber.shop_id, subscriber_id=subscriber.id, kind="suppressed",
                                      at=now, source=source[:16], detail=reason))
        session.commit()
        session.refresh(subscriber)
        _changed(session, subscriber.shop_id, subscriber.id)
    return subscriber


@signals.number_unreachable.connect
def _suppress_unreachable(session: OrmSession, *, subscriber: Subscriber, reason: str, source: str) -> Subscriber:
    """Receiver of kinnekt.signals.number_unreachable (sent by kinnekt.sms.outgoing)."""
    return suppress(session, subscriber, reason=reason, source=source)


def _transition(session: OrmSession, subscriber: Subscriber, condition, **values) -> bool:
    """Apply `values` only while `condition` holds; True when this call made the change."""
    result = session.execute(
        update(Subscriber).where(Subscriber.id == subscriber.id, condition)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _find(session: OrmSession, shop_id: int, e164: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.shop_id == shop_id, Subscriber.phone == e164)
                          .execution_options(populate_existing=True))


def _keyword_row(session: OrmSession, shop: Shop, keyword) -> Keyword | None:
    if keyword is None or isinstance(keyword, Keyword):
        return keyword
    word = str(keyword).strip().upper()
    return session.scalar(select(Keyword).where(Keyword.shop_id == shop.id, Keyword.word == word))


def _link_customer(session: OrmSession, sub: Subscriber, customer: Customer | None) -> None:
    """Link to the given customer, or to the shop's customer with this phone, unless already linked."""
    if customer is not None:
        sub.customer_id = customer.id
        return
    if sub.customer_id is None:
        sub.customer_id = session.scalar(
            select(Customer.id).where(Customer.shop_id == sub.shop_id, Customer.phone == sub.phone)
            .order_by(Customer.id).limit(1))


def _consent_detail(text: str, ip: str | None, message_id: str | None) -> str:
    parts = [text]
    if ip:
        parts.append(f"IP {ip}")
    if message_id:
        parts.append(f"SMS {message_id}")
    return " · ".join(parts)


def announce_imported(session: OrmSession, subscriber_ids: list[int]) -> None:
    """Announce committed opt-ins written in bulk (a CSV import) for those linked to a Shopify customer."""
    for start in range(0, len(subscriber_ids), 1000):
        linked = session.scalars(select(Subscriber.id).where(Subscriber.id.in_(subscriber_ids[start:start + 1000]),
                                                             Subscriber.customer_id.is_not(None))).all()
        for subscriber_id in linked:
            signals.announce(signals.sms_consent_changed, session, subscriber_id=subscriber_id)


def _tell_shopify(session: OrmSession, subscriber: Subscriber, source: str) -> None:
    """Announce a committed opt-in or opt-out made here, for Shopify's customer record (kinnekt.shopify.consent);
    one that came from Shopify (source Checkout) is not announced, so it never bounces back."""
    if subscriber.customer_id is not None and source != "checkout":
        signals.announce(signals.sms_consent_changed, session, subscriber_id=subscriber.id)


def _changed(session: OrmSession, shop_id: int, subscriber_id: int) -> None:
    signals.announce(signals.subscribers_changed, session, shop_id=shop_id, subscriber_ids=[subscriber_id])
