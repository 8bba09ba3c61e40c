"""Settings for storefront sign-up: the mobile popup (with a live preview, and whether its app embed is on in the
live theme) and the shareable link.

The settings page includes `settings/_popup.html` and `settings/_share.html`; `context()` gives them what
they show (without it they load themselves by htmx). The embed's state is always loaded after the page
(`settings/_popup_embed.html`): it is a call to Shopify.
"""
from __future__ import annotations

from flask import current_app, g, make_response, redirect, render_template, request, url_for
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Keyword
from kinnekt.demo import data as demo_data
from kinnekt.shopify import theme_embed
from kinnekt.subscribers import popup, share
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("signup_settings", __name__, url_prefix="/settings/signup")


def popup_context(form: popup.PopupSettings | None = None, errors: dict | None = None, saved: bool = False) -> dict:
    """What the popup card shows: the form values, errors per field and the disclosure under the preview."""
    return {"popup_form": form or popup.settings_for(g.shop), "popup_errors": errors or {},
            "popup_saved": saved, "popup_disclosure": popup.disclosure(g.shop), "popup_success": popup.SUCCESS_MESSAGE}


def share_context(keyword: str | None = None, error: str | None = None) -> dict:
    """What the shareable link card shows: the keyword choices, the link, its sms: URI and QR."""
    shop = g.shop
    keywords = Session.scalars(select(Keyword).where(Keyword.shop_id == shop.id).order_by(Keyword.word)).all()
    active = share.link_keyword(Session, shop)
    number = share.sender_number(shop)
    uri = share.sms_uri(number, active.word) if active is not None and number else None
    return {
        "share_keywords": keywords,
        "share_selected": keyword if keyword is not None else (shop.share_keyword or ""),
        "share_error": error,
        "share_active": active,
        "share_number": number,
        "share_url": share.page_url(shop) if uri else None,
        "share_sms_uri": uri,
        "share_qr": share.qr_svg(uri, title=f"Text {active.word} to {number}") if uri else None,
        "share_configured": shop.share_keyword,
        "share_missing_keyword": bool(shop.share_keyword) and active is None,
    }


def context() -> dict:
    """Everything both partials need, for the settings page to pass to its template."""
    return {**popup_context(), **share_context()}


def _document_request() -> bool:
    return not hx.is_htmx()


@bp.get("/popup")
def popup_card():
    """The popup settings card (the settings page for a full navigation)."""
    if _document_request():
        return redirect(url_for("settings.index"))
    return render_template("settings/_popup.html", **popup_context())


@bp.post("/popup")
def save_popup():
    """Save the popup settings; errors are shown beside their fields and nothing is saved."""
    values, errors = popup.validate(request.form)
    if errors:
        return render_template("settings/_popup.html", **popup_context(values, errors))
    popup.save(Session, g.shop, values)
    response = make_response(render_template("settings/_popup.html", **popup_context(values, saved=True)))
    return hx.toast(response, "Popup turned on and saved." if values.enabled else "Popup settings saved.")


def embed_context() -> dict:
    """The popup embed's state in the live theme (the demo store's is made up) and the theme editor link."""
    shop, config = g.shop, current_app.config
    if shop.is_demo:
        status = theme_embed.EmbedStatus(demo_data.THEME_POPUP_EMBED, theme=demo_data.THEME_NAME)
    else:
        status = theme_embed.read(shop, config["SHOPIFY_APP_HANDLE"])
    return {"embed_status": status,
            "embed_editor_url": theme_embed.editor_url(shop.domain, config["SHOPIFY_API_KEY"] or "kinnekt")}


@bp.get("/popup/embed")
def popup_embed():
    """Whether the popup's app embed is on in the live theme (loaded after the settings page)."""
    if _document_request():
        return redirect(url_for("settings.index"))
    return render_template("settings/_popup_embed.html", **embed_context())


@bp.post("/popup/preview")
def preview_popup():
    """The live preview, re-rendered from the form as it is typed (nothing saved)."""
    values, _ = popup.validate(request.form)
    return render_template("storefront/_popup_preview.html", popup=values, disclosure=popup.disclosure(g.shop),
                           popup_success=popup.SUCCESS_MESSAGE)


@bp.get("/share")
def share_card():
    """The shareable link settings card (the settings page for a full navigation)."""
    if _document_request():
        return redirect(url_for("settings.index"))
    return render_template("settings/_share.html", **share_context())


@bp.post("/share")
def save_share():
    """Choose the link's keyword (or none, to turn the link off)."""
    word = request.form.get("keyword", "")
    try:
        chosen = share.set_keyword(Session, g.shop, word)
    except share.ShareError as exc:
        Session.rollback()
        return render_template("settings/_share.html", **share_context(keyword=word.strip().upper(), error=str(exc)))
    response = make_response(render_template("settings/_share.html", **share_context()))
    return hx.toast(response, f"Shareable link uses {chosen}." if chosen else "Shareable link turned off.")
