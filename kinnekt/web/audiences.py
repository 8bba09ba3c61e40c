"""The Settings page's ad audiences card: connect Meta and Google Ads accounts, choose the account, allow emails,
pick the segments kept in sync with an audience, sync now, remove, disconnect.

Every route is behind the session token and scoped to its shop (`get_or_404`: another shop's link or segment is a
404). Each answers the card (`settings/_audiences.html`) with a toast; a choice that cannot be saved comes back
with its error (status 400 outside htmx) and saves nothing. The connect button is a link to the public start page
(kinnekt.web.audience_oauth) carrying a start token signed for this shop.
"""
from __future__ import annotations

from flask import abort, g, make_response, redirect, render_template, request, url_for
from sqlalchemy import select

from kinnekt.audiences import connections, tasks
from kinnekt.db import Session
from kinnekt.models import AdConnection, AudienceLink, Segment
from kinnekt.models.audience import AdPlatform, LinkStatus
from kinnekt.numbers import record_id
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("audiences", __name__, url_prefix="/settings/audiences")

PLATFORMS = tuple(AdPlatform)
PLATFORM_PATTERN = "<any(" + ", ".join(p.value for p in PLATFORMS) + "):platform>"


def card_context(error: str | None = None) -> dict:
    """What the card shows: each platform's connection (or the connect link), its links, the segments to pick."""
    shop = g.shop
    found = {c.platform: c for c in Session.scalars(select(AdConnection).where(AdConnection.shop_id == shop.id))}
    links = list(Session.scalars(select(AudienceLink).where(AudienceLink.shop_id == shop.id)
                                 .order_by(AudienceLink.id)))
    segments = [(str(segment_id), name) for segment_id, name in Session.execute(
        select(Segment.id, Segment.name).where(Segment.shop_id == shop.id).order_by(Segment.name))]
    platforms = []
    for platform in PLATFORMS:
        connection = found.get(platform)
        platforms.append({
            "key": platform.value, "label": connections.PLATFORM_LABELS[platform],
            "configured": connections.configured(platform), "connection": connection,
            "links": [link for link in links if connection is not None and link.connection_id == connection.id],
            "connect_url": url_for("audience_oauth.start", platform=platform.value,
                                   t=connections.start_token(shop.id, platform.value)),
        })
    return {"audience_platforms": platforms, "audience_segments": segments, "audience_error": error,
            "LinkStatus": LinkStatus}


def _card(message: str | None = None, *, error: str | None = None):
    """The card as an htmx answer with a toast, or back to Settings for a plain form post."""
    if not hx.is_htmx():
        if error:
            return make_response(render_template("settings/_audiences.html", **card_context(error)), 400)
        return redirect(url_for("settings.index"))
    response = make_response(render_template("settings/_audiences.html", **card_context(error)))
    if message or error:
        hx.toast(response, error or message, error=bool(error))
    return response


def _connection(platform: str) -> AdConnection:
    connection = Session.scalar(select(AdConnection).where(AdConnection.shop_id == g.shop.id,
                                                           AdConnection.platform == platform))
    if connection is None:
        abort(404)
    return connection


@bp.get("/")
def card():
    """The card (Settings for a full navigation)."""
    if not hx.is_htmx():
        return redirect(url_for("settings.index"))
    return render_template("settings/_audiences.html", **card_context())


@bp.post("/" + PLATFORM_PATTERN + "/account")
def choose_account(platform: str):
    """Use one of the listed ad accounts."""
    connection = _connection(platform)
    try:
        connections.choose_account(Session, connection, request.form.get("account_id", "")[:64])
    except connections.AudienceInputError as exc:
        Session.rollback()
        return _card(error=str(exc))
    return _card("Ad account saved")


@bp.post("/" + PLATFORM_PATTERN + "/emails")
def allow_emails(platform: str):
    """Send emails too, or phones only."""
    connection = _connection(platform)
    values = request.form.getlist("allow_emails")
    allow = bool(values) and values[-1].strip().lower() in ("1", "true", "on", "yes")
    connections.set_allow_emails(Session, connection, allow)
    for link_id in Session.scalars(select(AudienceLink.id).where(AudienceLink.connection_id == connection.id)):
        tasks.enqueue_sync_audience(link_id)
    return _card("Emails are sent too" if allow else "Only phone numbers are sent")


@bp.post("/" + PLATFORM_PATTERN + "/disconnect")
def disconnect(platform: str):
    """Forget the connection, its tokens and its links."""
    connections.disconnect(Session, _connection(platform))
    return _card("Disconnected")


@bp.post("/" + PLATFORM_PATTERN + "/links")
def add_link(platform: str):
    """Keep a segment in sync with a new audience; its first sync is queued."""
    connection = _connection(platform)
    segment_id = record_id(request.form.get("segment_id", ""))
    segment = Session.get(Segment, segment_id) if segment_id is not None else None
    if segment is None or segment.shop_id != g.shop.id:
        return _card(error="Choose one of your segments.")
    try:
        link = connections.add_link(Session, connection, segment)
    except connections.AudienceInputError as exc:
        Session.rollback()
        return _card(error=str(exc))
    tasks.enqueue_sync_audience(link.id)
    return _card(f"“{segment.name}” will be kept in sync; its first sync has started")


@bp.post("/links/<int:link_id>/sync")
def sync_now(link_id: int):
    """Sync one audience now (a failed one too)."""
    link = get_or_404(AudienceLink, link_id)
    if link.status == LinkStatus.STOPPED:
        return _card(error="This audience's segment was deleted: it is no longer synced.")
    tasks.enqueue_sync_audience(link.id)
    return _card("Sync started")


@bp.post("/links/<int:link_id>/delete")
def remove_link(link_id: int):
    """Stop syncing a segment (the audience stays at the platform)."""
    connections.remove_link(Session, get_or_404(AudienceLink, link_id))
    return _card("The segment is no longer synced")
