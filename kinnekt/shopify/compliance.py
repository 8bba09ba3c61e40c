"""Shopify's mandatory privacy topics: export a customer's data, erase a customer, erase a whole shop."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from kinnekt import signals
from kinnekt.db import utcnow
from kinnekt.models import (
    Checkout, Click, Customer, CustomerTag, DataRequest, InboundMessage, Link, Message, Order, OutboxMessage, Segment,
    SegmentMember, Shop, SignupAttempt, StaticList, StaticListEntry, Subscriber, SubscriptionEvent, WebhookEvent,
)
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from kinnekt.models.subscriber_key import before_deleting_subscribers
from kinnekt.shopify.ingest.linking import chunks, e164
from kinnekt.shopify.ingest.rest import shopify_id

REDACTED_PHONE = "redacted"
REDACTED_PAYLOAD = '{"redacted": true}'


@dataclass
class Person:
    """Who a privacy request is about, and what we matched: customers by id/email/phone, subscribers by link/phone."""

    customer_shopify_id: int | None
    email: str | None
    phone: str | None
    order_ids: list[int] = field(default_factory=list)
    customer_ids: list[int] = field(default_factory=list)
    subscriber_ids: list[int] = field(default_factory=list)
    phones: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)


def person_from_payload(payload: dict, orders_key: str) -> Person:
    """The customer a compliance payload names: {"customer": {id, email, phone}, orders_key: [...]}."""
    customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
    email = (str(customer.get("email") or "").strip().lower() or None)
    phone = str(customer.get("phone") or "").strip() or None
    orders = [oid for oid in map(shopify_id, payload.get(orders_key) or []) if oid is not None]
    return Person(customer_shopify_id=shopify_id(customer.get("id")), email=email, phone=phone, order_ids=orders)


def match(session, shop: Shop, person: Person) -> Person:
    """Fill in the customers and subscribers we hold for this person (by customer id, email and phone)."""
    conditions = []
    if person.customer_shopify_id is not None:
        conditions.append(Customer.shopify_id == person.customer_shopify_id)
    if person.email:
        conditions.append(func.lower(Customer.email) == person.email)
    customers = list(session.scalars(select(Customer).where(Customer.shop_id == shop.id, or_(*conditions)))) \
        if conditions else []
    # Shopify may send a national number ("555-625-1199"): read it in the country of the customer found, else US.
    region = next((c.country_code for c in customers if c.country_code), None) or "US"
    phone = (e164(person.phone) or e164(person.phone, region)) if person.phone else None
    if phone:
        known = {c.id for c in customers}
        customers += [c for c in session.scalars(select(Customer).where(Customer.shop_id == shop.id,
                                                                        Customer.phone == phone))
                      if c.id not in known]
    person.customer_ids = sorted(c.id for c in customers)
    person.phones = {p for p in [phone, *(c.phone for c in customers)] if p}
    person.emails = {e.lower() for e in [person.email, *(c.email for c in customers)] if e}
    sub_conditions = []
    if person.customer_ids:
        sub_conditions.append(Subscriber.customer_id.in_(person.customer_ids))
    if person.phones:
        sub_conditions.append(Subscriber.phone.in_(sorted(person.phones)))
    subscribers = session.scalars(select(Subscriber).where(Subscriber.shop_id == shop.id, or_(*sub_conditions))
                                  ).all() if sub_conditions else []
    person.subscriber_ids = sorted(s.id for s in subscribers)
    person.phones |= {s.phone for s in subscribers}
    return person


def _order_filter(shop: Shop, person: Person):
    conditions = []
    if person.customer_ids:
        conditions.append(Order.customer_id.in_(person.customer_ids))
    if person.order_ids:
        conditions.append(Order.shopify_id.in_(person.order_ids))
    if person.emails:
        conditions.append(func.lower(Order.email).in_(sorted(person.emails)))
    return (Order.shop_id == shop.id) & or_(*conditions) if conditions else None


def _message_filter(model, phone_column, person: Person):
    """The person's rows: by their subscribers, or, for rows linked to no subscriber, by phone.

    A row linked to a subscriber went to that subscriber's phone (a subscriber's phone never changes), and
    the person's subscribers are all those with their phones: so nothing is missed, and each side has an index.
    """
    conditions = []
    if person.subscriber_ids:
        conditions.append(model.subscriber_id.in_(person.subscriber_ids))
    if person.phones:
        conditions.append(and_(model.subscriber_id.is_(None), phone_column.in_(sorted(person.phones))))
    return or_(*conditions) if conditions else None


def _plain(value):
    """A value as JSON can hold it."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _row(obj, names) -> dict:
    return {name: _plain(getattr(obj, name)) for name in names}


def collect(session, shop: Shop, person: Person) -> dict:
    """Everything we hold about this person in this shop, as a JSON-ready document."""
    person = match(session, shop, person)
    report: dict = {"shop": shop.domain, "generated_at": utcnow().isoformat(),
                    "customers": [], "subscribers": [], "messages": [], "inbound_messages": [], "clicks": [],
                    "orders": [], "checkouts": [], "lists": []}
    for customer in session.scalars(select(Customer).where(Customer.id.in_(person.customer_ids or [-1]))):
        data = _row(customer, ["shopify_id", "email", "phone", "first_name", "last_name", "city", "country_code",
                               "sms_consent_state", "sms_consent_updated_at", "shopify_created_at", "money_spent",
                               "total_discounts", "orders_count", "first_order_at", "last_order_at"])
        data["tags"] = sorted(session.scalars(select(CustomerTag.tag).where(CustomerTag.customer_id == customer.id)))
        report["customers"].append(data)
    for subscriber in session.scalars(select(Subscriber).where(Subscriber.id.in_(person.subscriber_ids or [-1]))):
        data = _row(subscriber, ["phone", "status", "source", "keyword", "first_name", "country", "carrier",
                                 "timezone", "consent_at", "consent_text", "consent_ip", "subscribed_at",
                                 "unsubscribed_at", "unsubscribe_reason", "suppressed_at", "sent_count",
                                 "clicks_count", "last_received_at", "last_clicked_at"])
        data["consent_history"] = [
            _row(e, ["kind", "at", "source", "detail"]) for e in session.scalars(
                select(SubscriptionEvent).where(SubscriptionEvent.subscriber_id == subscriber.id)
                .order_by(SubscriptionEvent.at, SubscriptionEvent.id))]
        from kinnekt.subscribers import properties
        known = properties.types(session, shop.id)
        data["profile_properties"] = {key: properties.show(known[key], value) for key, value in sorted(
            properties.values(session, shop.id, subscriber.id).items())}
        report["subscribers"].append(data)
    where = _message_filter(Message, Message.to_phone, person)
    if where is not None:
        report["messages"] = [_row(m, ["campaign_id", "kind", "to_phone", "body", "status", "sent_at",
                                       "delivered_at"])
                              for m in session.scalars(select(Message).where(Message.shop_id == shop.id, where)
                                                       .order_by(Message.id))]
    where = _message_filter(InboundMessage, InboundMessage.from_phone, person)
    if where is not None:
        report["inbound_messages"] = [_row(m, ["from_phone", "text", "received_at"]) for m in session.scalars(
            select(InboundMessage).where(InboundMessage.shop_id == shop.id, where).order_by(InboundMessage.id))]
    if person.subscriber_ids:
        report["clicks"] = [{"url": url, "at": _plain(at), "campaign_id": campaign_id}
                            for url, at, campaign_id in session.execute(
                                select(Link.url, Click.at, Click.campaign_id).join(Link, Link.id == Click.link_id)
                                .where(Click.shop_id == shop.id, Click.subscriber_id.in_(person.subscriber_ids))
                                .order_by(Click.at))]
    where = _order_filter(shop, person)
    if where is not None:
        report["orders"] = [_row(o, ["shopify_id", "name", "email", "phone", "created_at", "cancelled_at",
                                     "financial_status", "fulfillment_status", "currency", "total_price",
                                     "current_total_price", "total_discounts", "discount_codes"])
                            for o in session.scalars(select(Order).where(where).order_by(Order.created_at))]
    checkout_where = [c for c in (Checkout.customer_id.in_(person.customer_ids) if person.customer_ids else None,
                                  Checkout.phone.in_(sorted(person.phones)) if person.phones else None)
                      if c is not None]
    if checkout_where:
        report["checkouts"] = [_row(c, ["token", "phone", "started_at", "completed_at"]) for c in session.scalars(
            select(Checkout).where(Checkout.shop_id == shop.id, or_(*checkout_where)))]
    if person.phones:
        report["lists"] = [{"list": name, "phone": phone} for name, phone in session.execute(
            select(StaticList.name, StaticListEntry.phone).join(StaticList, StaticList.id == StaticListEntry.list_id)
            .where(StaticListEntry.shop_id == shop.id, StaticListEntry.phone.in_(sorted(person.phones))))]
    return report


def record_data_request(session, shop: Shop, payload: dict) -> DataRequest | None:
    """Store a customers/data_request with its report; None when that Shopify request is already stored. Commits."""
    person = person_from_payload(payload, "orders_requested")
    request_id = shopify_id((payload.get("data_request") or {}).get("id")) \
        if isinstance(payload.get("data_request"), dict) else None
    report = collect(session, shop, person)
    data_request = DataRequest(
        shop_id=shop.id, shopify_request_id=request_id, customer_shopify_id=person.customer_shopify_id,
        email=person.email, phone=(person.phone or None) and person.phone[:64], orders_requested=person.order_ids,
        report=report)
    session.add(data_request)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return data_request


@dataclass
class Redaction:
    """What a customers/redact erased (counts only: the point is that nothing personal is left)."""

    customers: int = 0
    subscribers: int = 0
    messages: int = 0
    inbound_messages: int = 0
    orders: int = 0
    checkouts: int = 0
    list_entries: int = 0
    data_requests: int = 0
    webhook_events: int = 0
    storefront_events: int = 0

    def summary(self) -> str:
        """One line for the webhook event's note."""
        return "redacted " + ", ".join(f"{k}={v}" for k, v in self.__dict__.items())


def redact_customer(session, shop: Shop, payload: dict, *, keep_event_id: int | None = None) -> Redaction:
    """Erase one customer's personal data in this shop (customers/redact); aggregates stay. Commits.

    Customers matched by id, email or phone keep their purchase facts but lose name, email, phone, city and tags.
    Their subscribers (by link or phone) are deleted with their consent history; sent messages keep their
    status and price but lose phone and text; inbound messages are deleted; orders lose email and phone; their
    storefront events and the browsers they used are deleted (erase_storefront).
    """
    before_deleting_subscribers(session, shop.id)  # before any row lock: see subscriber_key
    person = match(session, shop, person_from_payload(payload, "orders_to_redact"))
    done = Redaction()
    subscriber_ids = person.subscriber_ids
    where = _message_filter(Message, Message.to_phone, person)
    if where is not None:
        done.messages = _count(session.execute(
            update(Message).where(Message.shop_id == shop.id, where)
            .values(to_phone=REDACTED_PHONE, body=None, error_reason=None)
            .execution_options(synchronize_session=False)))
    where = _message_filter(InboundMessage, InboundMessage.from_phone, person)
    if where is not None:
        done.inbound_messages = _count(session.execute(
            delete(InboundMessage).where(InboundMessage.shop_id == shop.id, where)
            .execution_options(synchronize_session=False)))
    done.storefront_events = erase_storefront(session, shop.id, subscriber_ids=subscriber_ids,
                                              customer_shopify_id=person.customer_shopify_id)
    segment_ids = sorted(set(session.scalars(select(SegmentMember.segment_id).where(
        SegmentMember.shop_id == shop.id, SegmentMember.subscriber_id.in_(subscriber_ids))))) if subscriber_ids else []
    if subscriber_ids:
        session.execute(update(Click).where(Click.shop_id == shop.id, Click.subscriber_id.in_(subscriber_ids))
                        .values(user_agent=None).execution_options(synchronize_session=False))
        for batch in chunks(subscriber_ids):
            done.subscribers += _count(session.execute(
                delete(Subscriber).where(Subscriber.shop_id == shop.id, Subscriber.id.in_(batch))
                .execution_options(synchronize_session=False)))
    if person.phones:
        phones = sorted(person.phones)
        done.list_entries = _count(session.execute(
            delete(StaticListEntry).where(StaticListEntry.shop_id == shop.id, StaticListEntry.phone.in_(phones))
            .execution_options(synchronize_session=False)))
        session.execute(delete(OutboxMessage).where(OutboxMessage.shop_id == shop.id,
                                                    OutboxMessage.to_phone.in_(phones))
                        .execution_options(synchronize_session=False))
        session.execute(delete(SignupAttempt).where(SignupAttempt.shop_id == shop.id, SignupAttempt.phone.in_(phones))
                        .execution_options(synchronize_session=False))
    checkout_where = [c for c in (Checkout.customer_id.in_(person.customer_ids) if person.customer_ids else None,
                                  Checkout.phone.in_(sorted(person.phones)) if person.phones else None)
                      if c is not None]
    if checkout_where:
        done.checkouts = _count(session.execute(
            update(Checkout).where(Checkout.shop_id == shop.id, or_(*checkout_where)).values(phone=None)
            .execution_options(synchronize_session=False)))
    where = _order_filter(shop, person)
    if where is not None:
        done.orders = _count(session.execute(
            update(Order).where(where).values(email=None, phone=None).execution_options(synchronize_session=False)))
    if person.customer_ids:
        session.execute(delete(CustomerTag).where(CustomerTag.customer_id.in_(person.customer_ids))
                        .execution_options(synchronize_session=False))
        done.customers = _count(session.execute(
            update(Customer).where(Customer.id.in_(person.customer_ids))
            .values(email=None, phone=None, first_name=None, last_name=None, city=None, city_folded=None,
                    sms_consent_state="redacted")
            .execution_options(synchronize_session=False)))
    request_where = [c for c in (
        DataRequest.customer_shopify_id == person.customer_shopify_id if person.customer_shopify_id else None,
        func.lower(DataRequest.email).in_(sorted(person.emails)) if person.emails else None) if c is not None]
    if request_where:
        done.data_requests = _count(session.execute(
            delete(DataRequest).where(DataRequest.shop_id == shop.id, or_(*request_where))
            .execution_options(synchronize_session=False)))
    done.webhook_events = _scrub_webhook_payloads(session, shop, person, keep_event_id)
    session.commit()
    session.expire_all()
    if done.subscribers:
        # Their rows in ad audiences lost their subscriber: the audiences' syncs remove them there.
        signals.announce(signals.subscribers_redacted, session, shop_id=shop.id)
    # The deleted subscribers left their segments by cascade; a rebuild puts the member counts right.
    from kinnekt.segments.membership import request_build
    for segment in session.scalars(select(Segment).where(Segment.id.in_(segment_ids))).all():
        request_build(segment, session=session)
    return done


def erase_storefront(session, shop_id: int, *, subscriber_ids=(), customer_shopify_id: int | None = None) -> int:
    """Delete the events and browsers of these subscribers and of this Shopify customer, with every event of
    the browsers they used. Not committed (the redaction commits). Returns how many events were deleted."""
    subscriber_ids = sorted(set(subscriber_ids))
    owners = []
    if subscriber_ids:
        owners.append(StorefrontEvent.subscriber_id.in_(subscriber_ids))
    if customer_shopify_id is not None:
        owners.append(StorefrontEvent.customer_id == customer_shopify_id)
    if not owners:
        return 0
    theirs = StorefrontEvent.shop_id == shop_id
    client_ids = set(session.scalars(select(StorefrontEvent.client_id).where(theirs, or_(*owners))
                                     .where(StorefrontEvent.client_id.is_not(None)).distinct()))
    if subscriber_ids:
        client_ids |= set(session.scalars(select(StorefrontBrowser.client_id).where(
            StorefrontBrowser.shop_id == shop_id, StorefrontBrowser.subscriber_id.in_(subscriber_ids))))
    conditions = list(owners)
    ordered = sorted(client_ids)
    deleted = 0
    for start in range(0, max(len(ordered), 1), 500):
        chunk = ordered[start:start + 500]
        where = or_(*conditions, StorefrontEvent.client_id.in_(chunk)) if chunk else or_(*conditions)
        deleted += session.execute(delete(StorefrontEvent).where(theirs, where)
                                   .execution_options(synchronize_session=False)).rowcount or 0
        if chunk:
            session.execute(delete(StorefrontBrowser).where(StorefrontBrowser.shop_id == shop_id,
                                                            StorefrontBrowser.client_id.in_(chunk))
                            .execution_options(synchronize_session=False))
    if subscriber_ids:
        session.execute(delete(StorefrontBrowser).where(StorefrontBrowser.shop_id == shop_id,
                                                        StorefrontBrowser.subscriber_id.in_(subscriber_ids))
                        .execution_options(synchronize_session=False))
    return deleted


def _scrub_webhook_payloads(session, shop: Shop, person: Person, keep_event_id: int | None) -> int:
    """Blank stored, processed webhook payloads that mention this person (email or phone)."""
    needles = sorted(person.emails | person.phones)
    if not needles:
        return 0
    mentions = or_(*(func.lower(WebhookEvent.payload).contains(needle.lower(), autoescape=True)
                     for needle in needles))
    statement = (update(WebhookEvent)
                 .where(or_(WebhookEvent.shop_id == shop.id, WebhookEvent.shop_domain == shop.domain),
                        WebhookEvent.processed_at.is_not(None), mentions)
                 .values(payload=REDACTED_PAYLOAD).execution_options(synchronize_session=False))
    if keep_event_id is not None:
        statement = statement.where(WebhookEvent.id != keep_event_id)
    return _count(session.execute(statement))


def redact_shop(session, shop: Shop, *, keep_event_id: int | None = None) -> None:
    """Delete everything we hold for this shop (shop/redact): the shop row and, by cascade, all its data. Commits."""
    before_deleting_subscribers(session, shop.id)  # before any row lock: see subscriber_key
    events = delete(WebhookEvent).where(or_(WebhookEvent.shop_id == shop.id, WebhookEvent.shop_domain == shop.domain))
    if keep_event_id is not None:
        # The shop/redact event itself stays, detached from the shop, as the record that the erasure ran.
        session.execute(update(WebhookEvent).where(WebhookEvent.id == keep_event_id).values(shop_id=None)
                        .execution_options(synchronize_session=False))
        events = events.where(WebhookEvent.id != keep_event_id)
    session.execute(events.execution_options(synchronize_session=False))
    # Messages are keyed to their campaign, not to the shop: those without one go here (found through the
    # shop's subscribers, or the index of rows without a subscriber), the rest with their campaigns.
    no_campaign = delete(Message).where(Message.shop_id == shop.id, Message.campaign_id.is_(None))
    theirs = select(Subscriber.id).where(Subscriber.shop_id == shop.id)
    session.execute(no_campaign.where(Message.subscriber_id.in_(theirs)).execution_options(synchronize_session=False))
    session.execute(no_campaign.where(Message.subscriber_id.is_(None)).execution_options(synchronize_session=False))
    session.execute(delete(Shop).where(Shop.id == shop.id).execution_options(synchronize_session=False))
    session.commit()
    session.expire_all()


def _count(result) -> int:
    return max(result.rowcount or 0, 0)
