"""Settings pages: sender, quiet hours, compliance, sending limits, attribution and checkout (a form per card)."""
from __future__ import annotations

from flask import current_app, g, make_response, render_template, request, url_for
from sqlalchemy import select

from kinnekt import defaults, shop_settings
from kinnekt.db import Session
from kinnekt.models import SyncOperation
from kinnekt.models.shop import SyncStatus
from kinnekt.models.sync import SYNC_KINDS
from kinnekt.sms import prices
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("settings", __name__, url_prefix="/settings")

SECTION_NAMES = tuple(shop_settings.SECTIONS)
"""The editable cards, each posted to /settings/<section> and answered with templates/settings/_<section>.html."""

LIMITS = {
    "sender_max": defaults.SENDER_ID_MAX_LENGTH,
    "footer_max": defaults.COMPLIANCE_FOOTER_MAX_LENGTH,
    "help_max": defaults.HELP_TEXT_MAX_LENGTH,
    "smart_max": defaults.SMART_SENDING_MAX_HOURS,
    "suppression_max": defaults.SUPPRESSION_MAX_MESSAGES,
    "attribution_min": defaults.ATTRIBUTION_WINDOW_MIN_DAYS,
    "attribution_max": defaults.ATTRIBUTION_WINDOW_MAX_DAYS,
}
"""Bounds shown in the forms (the domain enforces them)."""

SAVED_MESSAGES = {
    "sender": "Sender saved",
    "quiet_hours": "Quiet hours saved",
    "compliance": "Compliance settings saved",
    "sending": "Sending limits saved",
    "attribution": "Attribution and checkout settings saved",
}


def _hhmm(minutes: int) -> str:
    minutes = int(minutes) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def shop_values(shop) -> dict:
    """The form values of every setting, as the inputs show them."""
    return {
        "sender": shop.sender or "",
        "quiet_hours_enabled": shop.quiet_hours_enabled,
        "quiet_hours_start": _hhmm(shop.quiet_hours_start),
        "quiet_hours_end": _hhmm(shop.quiet_hours_end),
        "compliance_footer": shop.compliance_footer,
        "help_text": shop.help_text,
        "double_opt_in": shop.double_opt_in,
        "smart_sending_hours": str(shop.smart_sending_hours),
        "suppression_threshold": str(shop.suppression_threshold),
        "attribution_window_days": str(shop.attribution_window_days),
        "checkout_collection": shop.checkout_collection,
    }


def _posted_values(section: str) -> dict:
    """The section's fields as posted (shown again beside their errors)."""
    values = {}
    for name in shop_settings.SECTIONS[section]:
        if name in shop_settings.BOOLEAN_FIELDS:
            posted = request.form.getlist(name)
            values[name] = bool(posted) and posted[-1].strip().lower() in shop_settings.TRUE_WORDS
        else:
            values[name] = request.form.get(name, "")
    return values


def _context(values: dict | None = None, errors: dict | None = None) -> dict:
    return {"settings": g.shop, "values": values or shop_values(g.shop), "errors": errors or {},
            "limits": LIMITS, "default_sender": (current_app.config.get("VONAGE_SENDER") or "").strip(),
            "sms_prices": prices.table(), "other_countries_price": prices.OTHER_COUNTRIES, **sync_context()}


@bp.get("/")
def index():
    """The settings page: one card (and form) per group of settings, then store data."""
    return hx.render("settings/index.html", "settings/_index.html", **_context())


@bp.post("/<any(" + ", ".join(SECTION_NAMES) + "):section>")
def save(section: str):
    """Save one card's settings; its card comes back with the saved values, or the errors beside their fields."""
    result = shop_settings.save(Session, g.shop, request.form, section)
    if result.ok:
        values, message = shop_values(g.shop), SAVED_MESSAGES[section]
        if result.attribution_recompute == "queued":
            message += ". Past orders are being re-attributed with the new window."
    else:
        values = {**shop_values(g.shop), **_posted_values(section)}
        message = "Nothing was saved: fix the highlighted fields."
    context = _context(values, result.errors)
    if not hx.is_htmx():
        if result.ok:
            return hx.redirect_to(url_for("settings.index"))
        return render_template("settings/index.html", **context)
    response = make_response(render_template(f"settings/_{section}.html", **context))
    return hx.toast(response, message, error=not result.ok)


def sync_context() -> dict:
    """What the store data card shows: the shop's sync state and one line per kind of data."""
    operations = {op.kind: op
                  for op in Session.scalars(select(SyncOperation).where(SyncOperation.shop_id == g.shop.id))}
    return {"sync_operations": [operations[kind] for kind in SYNC_KINDS if kind in operations],
            "syncing": g.shop.sync_status in SyncStatus.ACTIVE}


@bp.get("/sync")
def sync():
    """The store data card, polled every 2 s while a sync runs; answers 286 (stop polling) once it is over."""
    body = render_template("settings/_sync.html", settings=g.shop, **sync_context())
    if hx.is_htmx() and g.shop.sync_status not in SyncStatus.ACTIVE:
        return hx.stop_polling(body)
    return body


@bp.post("/sync")
def resync():
    """Import the store's customers, orders and catalog again (unless a sync is already queued or running)."""
    from kinnekt.shopify import bulk
    if g.shop.is_demo:
        message, error = "The demo store has no Shopify connection to sync from.", True
    elif bulk.request_sync(g.shop):
        message, error = "Sync started. This page shows its progress.", False
    else:
        message, error = "A sync is already running.", False
    response = make_response(render_template("settings/_sync.html", settings=g.shop, **sync_context()))
    return hx.toast(response, message, error=error)
