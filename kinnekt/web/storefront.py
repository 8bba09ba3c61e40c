"""Public storefront endpoints: the mobile popup through Shopify's app proxy, and the shareable link page.

The popup's script and CSS ship in the theme app extension (`extensions/kinnekt-theme/assets/`, loaded from
Shopify's CDN by the app embed); the script asks `/apps/kinnekt/popup` on the storefront, which Shopify's app proxy
forwards to `/proxy/popup` here with a signed query. The popup markup and the sign-up answer only a correctly
signed request for an installed shop (else 401, and nothing is stored). Stores that pasted the older
`<script src="/apps/kinnekt/popup.js">` get the same two files through the proxy (script tags stop running on
storefronts on 2027-03-01); the Settings preview uses the CSS too.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, jsonify, make_response, render_template, request, send_from_directory

from kinnekt.db import Session
from kinnekt.shopify import app_proxy
from kinnekt.subscribers import popup, share

bp = Blueprint("storefront", __name__)


THEME_ASSETS = Path(__file__).resolve().parents[2] / "extensions" / "kinnekt-theme" / "assets"
"""The theme app extension's assets: the one copy of the popup's script and styles."""


def _asset(name: str, mimetype: str):
    return send_from_directory(THEME_ASSETS, name, mimetype=mimetype, max_age=300)


@bp.get("/proxy/popup.js")
def popup_script():
    """The popup script, the extension's own file (for stores that pasted the older script tag)."""
    return _asset("kinnekt-popup.js", "text/javascript")


@bp.get("/proxy/popup.css")
def popup_stylesheet():
    """The popup styles, the extension's own file (the older script tag and the Settings preview load it)."""
    return _asset("kinnekt-popup.css", "text/css")


def _verified_shop():
    """The installed shop of a correctly signed proxy request, or None (the caller answers 401)."""
    try:
        params = app_proxy.verify(request.query_string.decode("latin-1"),
                                  current_app.config.get("SHOPIFY_API_SECRET", ""))
        return app_proxy.installed_shop(Session, params)
    except app_proxy.ProxyRequestError as exc:
        current_app.logger.info("app proxy request refused: %s", exc)
        return None


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/proxy/popup")
def popup_markup():
    """The popup's markup for this shop (204 when the popup is off, so the script shows nothing)."""
    shop = _verified_shop()
    if shop is None:
        return _no_store(make_response(jsonify(ok=False, error="This request was not signed by Shopify."), 401))
    settings = popup.settings_for(shop)
    if not settings.enabled:
        return _no_store(make_response("", 204))
    html = render_template("storefront/_popup.html", popup=settings, disclosure=popup.disclosure(shop),
                           popup_success=popup.SUCCESS_MESSAGE, preview=False)
    return _no_store(make_response(html, 200, {"Content-Type": "text/html; charset=utf-8"}))


@bp.post("/proxy/popup")
def popup_signup():
    """Sign up from the popup: JSON {ok, message} or {ok: false, field, error}."""
    shop = _verified_shop()
    if shop is None:
        return _no_store(make_response(jsonify(ok=False, error="This request was not signed by Shopify."), 401))
    ip = app_proxy.client_ip(request.headers.get("X-Forwarded-For"), request.remote_addr,
                             current_app.config["TRUSTED_PROXY_HOPS"])
    try:
        popup.sign_up(Session, shop, request.form.get("phone", ""),
                      consented=request.form.get("consent") in ("1", "on", "yes", "true"),
                      ip=ip, country=request.form.get("country"),
                      fields={name: request.form.get(name, "") for name in popup.OPTIONAL_FIELDS.values()})
    except popup.SignupError as exc:
        Session.rollback()
        return _no_store(make_response(jsonify(ok=False, field=exc.field, error=str(exc)), exc.status))
    # The same answer whether or not the number was already subscribed: the form must not tell strangers
    # which numbers are on the list.
    return _no_store(make_response(jsonify(ok=True, message=popup.SUCCESS_MESSAGE), 200))


@bp.get("/j/<handle>")
def share_page(handle: str):
    """The shareable link page: a button that opens the phone's messages app with the keyword, and its QR."""
    shop = share.shop_for_handle(Session, handle)
    number = share.sender_number(shop) if shop is not None else None
    if shop is None or number is None:
        return render_template("storefront/missing.html"), 404
    keyword = share.link_keyword(Session, shop)
    uri = share.sms_uri(number, keyword.word)
    return render_template("storefront/share.html", shop_name=shop.name or shop.domain, keyword=keyword.word,
                           number=number, sms_uri=uri, qr=share.qr_svg(uri, title=f"Text {keyword.word} to {number}"))
