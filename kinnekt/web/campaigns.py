"""Campaigns pages: every campaign with its results, and the shop's totals on top."""
from __future__ import annotations

from decimal import Decimal

from flask import g
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Attribution, Campaign, Click, Message
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("campaigns", __name__, url_prefix="/campaigns")

SENT_STATUSES = ("sent", "delivered")
"""Message statuses that count as sent: the provider accepted the message (a receipt may have followed)."""


@bp.get("/")
def index():
    """The campaigns page: newest first, each with sent, clicks, orders and revenue from the rows themselves."""
    shop_id = g.shop.id
    sent = (
        select(Message.campaign_id, func.count().label("sent"))
        .where(Message.shop_id == shop_id, Message.campaign_id.is_not(None), Message.status.in_(SENT_STATUSES))
        .group_by(Message.campaign_id)
        .subquery()
    )
    clicks = (
        select(Click.campaign_id, func.count().label("clicks"))
        .where(Click.shop_id == shop_id, Click.campaign_id.is_not(None))
        .group_by(Click.campaign_id)
        .subquery()
    )
    orders = (
        select(Attribution.campaign_id, func.count().label("orders"), func.sum(Attribution.revenue).label("revenue"))
        .where(Attribution.shop_id == shop_id, Attribution.campaign_id.is_not(None))
        .group_by(Attribution.campaign_id)
        .subquery()
    )
    rows = Session.execute(
        select(
            Campaign,
            func.coalesce(sent.c.sent, 0).label("sent"),
            func.coalesce(clicks.c.clicks, 0).label("clicks"),
            func.coalesce(orders.c.orders, 0).label("orders"),
            orders.c.revenue,
        )
        .outerjoin(sent, sent.c.campaign_id == Campaign.id)
        .outerjoin(clicks, clicks.c.campaign_id == Campaign.id)
        .outerjoin(orders, orders.c.campaign_id == Campaign.id)
        .where(Campaign.shop_id == shop_id)
        .order_by(Campaign.created_at.desc(), Campaign.id.desc())
    ).all()
    totals = {
        "sent": sum(row.sent for row in rows),
        "clicks": sum(row.clicks for row in rows),
        "orders": sum(row.orders for row in rows),
        "revenue": sum((row.revenue or Decimal(0) for row in rows), Decimal(0)),
    }
    return hx.render("campaigns/index.html", "campaigns/_index.html", campaigns=rows, totals=totals)
