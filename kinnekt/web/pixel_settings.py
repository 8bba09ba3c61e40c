"""The Settings page's storefront events card: the web pixel's state, (re)connecting it, and the retention.

The settings page includes `settings/_pixel.html`, which loads itself from here (so the settings view stays as
it is); while the pixel's job is queued or running the card polls every 2 s and stops (286) once it is done.
"""
from __future__ import annotations

from flask import g, make_response, redirect, render_template, request, url_for

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.queue import get_queue
from kinnekt.shopify import tasks as shopify_tasks
from kinnekt.storefront import overview, retention
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("pixel_settings", __name__, url_prefix="/settings/pixel")


def _connecting() -> bool:
    job_id = shopify_tasks.web_pixel_job_id(g.shop.id)
    return bool(get_queue().unfinished([job_id]))


def card_context(days: str | None = None, error: str | None = None) -> dict:
    """What the card shows: the pixel's state, the last week's events, and the retention field."""
    return {"pixel_shop": g.shop, "pixel_connecting": _connecting(),
            "pixel_overview": overview.overview(Session, g.shop),
            "pixel_days": days if days is not None else str(g.shop.storefront_retention_days),
            "pixel_error": error, "pixel_min_days": defaults.STOREFRONT_RETENTION_MIN_DAYS,
            "pixel_max_days": defaults.STOREFRONT_RETENTION_MAX_DAYS}


def _card(**context):
    return render_template("settings/_pixel.html", **card_context(**context))


@bp.get("/")
def card():
    """The card (the settings page for a full navigation); 286 stops the polling once no job is pending."""
    if not hx.is_htmx():
        return redirect(url_for("settings.index"))
    body = _card()
    if request.args.get("poll") and not _connecting():
        return hx.stop_polling(body)
    return body


@bp.post("/connect")
def connect():
    """Queue the creation (or update) of the shop's web pixel in Shopify."""
    if g.shop.is_demo:
        return hx.toast(make_response(_card()), "The demo store has no Shopify connection for a pixel.", error=True)
    shopify_tasks.enqueue_connect_web_pixel(g.shop.id)
    if not hx.is_htmx():
        return redirect(url_for("settings.index"))
    return hx.toast(make_response(_card()), "Connecting the pixel to your store.")


@bp.post("/retention")
def save_retention():
    """Save how many days storefront events are kept; the card comes back with the value or its error."""
    raw = request.form.get("storefront_retention_days", "")
    try:
        retention.set_retention(Session, g.shop, raw)
    except retention.RetentionError as exc:
        Session.rollback()
        response = make_response(_card(days=raw[:20], error=str(exc)), 200 if hx.is_htmx() else 400)
        return hx.toast(response, "Nothing was saved: fix the highlighted field.", error=True)
    if not hx.is_htmx():
        return redirect(url_for("settings.index"))
    return hx.toast(make_response(_card()), "Retention saved")
