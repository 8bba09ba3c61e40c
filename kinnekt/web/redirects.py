"""Public short links: `GET /r/<code>` records the click and sends the visitor on to the target.

No session token (the visitor is a subscriber on a phone); the code itself names the link, in any shop.
Link-preview fetchers (iMessage/WhatsApp/Slack/Facebook previews, crawlers) and HEAD requests are redirected
the same way but not counted: they are no person clicking, and counting them would make every message
"clicked" the moment it arrives.
"""
from __future__ import annotations

import logging

from flask import Blueprint, redirect, render_template, request
from sqlalchemy import case, update

from kinnekt.campaigns import links
from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign, Click, Subscriber

log = logging.getLogger(__name__)

bp = Blueprint("redirects", __name__)


@bp.get("/r/<code>")
def follow(code: str):
    """Record a click on the link and redirect (302) to its target with UTM parameters and the ref."""
    link = links.find(Session, code)
    if link is None or not links.is_trackable(link.url):
        return render_template("redirects/not_found.html"), 404
    campaign = Session.get(Campaign, link.campaign_id) if link.campaign_id is not None else None
    target = links.target_url(link, campaign)
    user_agent = request.headers.get("User-Agent", "")
    if request.method == "GET" and not links.is_preview_agent(user_agent):
        try:
            record_click(link.shop_id, link.id, link.campaign_id, link.subscriber_id, user_agent)
        except Exception:  # the shopper still gets where they were going; the lost click is logged
            Session.rollback()
            log.exception("click on link %s not recorded", link.id)
    response = redirect(target, code=302)
    response.headers["Cache-Control"] = "no-store"  # every tap must reach us to be counted
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def record_click(shop_id: int, link_id: int, campaign_id: int | None, subscriber_id: int | None,
                 user_agent: str | None) -> None:
    """Store the click, bump the subscriber's click facts, commit, then ask segments to re-check them."""
    now = utcnow()
    Session.add(Click(shop_id=shop_id, link_id=link_id, campaign_id=campaign_id, subscriber_id=subscriber_id,
                      at=now, user_agent=(user_agent or "")[:512] or None))
    if subscriber_id is not None:
        Session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber_id, Subscriber.shop_id == shop_id)
            .values(clicks_count=Subscriber.clicks_count + 1,
                    last_clicked_at=case((Subscriber.last_clicked_at.is_(None), now),
                                         (Subscriber.last_clicked_at < now, now),
                                         else_=Subscriber.last_clicked_at))
            .execution_options(synchronize_session=False))
    Session.commit()
    if subscriber_id is not None:
        from kinnekt.segments.membership import subscribers_changed
        subscribers_changed(shop_id, [subscriber_id])

