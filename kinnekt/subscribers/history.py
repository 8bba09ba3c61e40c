"""One subscriber's history as the detail page shows it: consent events, messages sent, texts received, clicks,
orders and segments, each the latest few with a total."""
from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import (Campaign, Click, InboundMessage, Link, Message, Order, Segment, SegmentMember, Subscriber,
                            SubscriptionEvent)


def latest(session: OrmSession, subscriber: Subscriber, limit: int) -> dict:
    """The subscriber's history, each list the latest `limit` rows, newest first, beside its total: `events`
    (SubscriptionEvent), `messages` ((Message, campaign name)), `received` (InboundMessage: by the subscriber,
    or from its number before it was known, merged duplicates left out), `clicks` ((Click, url, campaign name)),
    `orders` (its customer's Order rows), each with `<name>_total`; and `segments` ((Segment, entered_at), by
    name)."""
    sid = subscriber.id
    events = session.scalars(select(SubscriptionEvent).where(SubscriptionEvent.subscriber_id == sid)
                             .order_by(SubscriptionEvent.at.desc(), SubscriptionEvent.id.desc()).limit(limit)).all()
    sent_order = func.coalesce(Message.sent_at, Message.created_at)
    messages = session.execute(
        select(Message, Campaign.name).outerjoin(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.subscriber_id == sid).order_by(sent_order.desc(), Message.id.desc()).limit(limit)).all()
    inbound_of = and_(or_(InboundMessage.subscriber_id == sid,
                          and_(InboundMessage.subscriber_id.is_(None), InboundMessage.from_phone == subscriber.phone)),
                      or_(InboundMessage.intent.is_(None), InboundMessage.intent != "merged"))
    received = session.scalars(select(InboundMessage).where(inbound_of)
                               .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
                               .limit(limit)).all()
    clicks = session.execute(
        select(Click, Link.url, Campaign.name).join(Link, Link.id == Click.link_id)
        .outerjoin(Campaign, Campaign.id == Click.campaign_id)
        .where(Click.subscriber_id == sid).order_by(Click.at.desc(), Click.id.desc()).limit(limit)).all()
    orders, orders_total = [], 0
    if subscriber.customer_id is not None:
        orders = session.scalars(select(Order).where(Order.customer_id == subscriber.customer_id)
                                 .order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)).all()
        orders_total = _count(session, select(Order.id).where(Order.customer_id == subscriber.customer_id))
    segments = session.execute(
        select(Segment, SegmentMember.entered_at).join(SegmentMember, SegmentMember.segment_id == Segment.id)
        .where(SegmentMember.subscriber_id == sid).order_by(Segment.name)).all()
    return {
        "events": events, "events_total": _count(session, select(SubscriptionEvent.id)
                                                 .where(SubscriptionEvent.subscriber_id == sid)),
        "messages": messages, "messages_total": _count(session, select(Message.id).where(Message.subscriber_id == sid)),
        "received": received, "received_total": _count(session, select(InboundMessage.id).where(inbound_of)),
        "clicks": clicks, "clicks_total": _count(session, select(Click.id).where(Click.subscriber_id == sid)),
        "orders": orders, "orders_total": orders_total, "segments": segments,
    }


def _count(session: OrmSession, statement) -> int:
    return session.scalar(select(func.count()).select_from(statement.subquery())) or 0
