"""Public OAuth endpoints of ad platform connections: /audiences/oauth/<platform>/start and …/callback.

They run outside the embedded admin (the platforms' login pages refuse to be framed), so no session token comes
with them: the start page takes a start token signed for the shop (handed out by the Settings card), sets a
signed nonce cookie (HttpOnly, SameSite=Lax, on this path only) and sends the merchant to the platform; the
callback saves tokens only when the state is genuine, fresh, for this platform and matches this browser's cookie
(kinnekt.audiences.connections). Refusals are 400/403 pages that save nothing. Both are rate-limited per address.
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, make_response, redirect, render_template, request

from kinnekt import defaults
from kinnekt.audiences import connections, tasks
from kinnekt.audiences.platform import PlatformError
from kinnekt.db import Session
from kinnekt.models import Shop
from kinnekt.models.audience import AdPlatform
from kinnekt.storefront.limits import LocalCounter

log = logging.getLogger(__name__)

bp = Blueprint("audience_oauth", __name__, url_prefix="/audiences/oauth")
COOKIE = "kinnekt_ads_oauth"
PLATFORM_PATTERN = "<any(" + ", ".join(p.value for p in AdPlatform) + "):platform>"


def callback_url(platform: str) -> str:
    """The redirect URI registered with the platform (under SHOPIFY_APP_URL)."""
    return f"{current_app.config['SHOPIFY_APP_URL'].rstrip('/')}/audiences/oauth/{platform}/callback"


def _refused(status: int, message: str):
    response = make_response(render_template("audiences/oauth_result.html", ok=False, message=message), status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/" + PLATFORM_PATTERN + "/start")
def start(platform: str):
    """Check the start token, remember a fresh nonce in a cookie, and go to the platform's login."""
    try:
        shop_id = connections.read_start_token(request.args.get("t"), platform)
    except connections.OAuthRefused as exc:
        return _refused(400, str(exc))
    if not connections.configured(platform):
        return _refused(400, f"{connections.PLATFORM_LABELS[platform]} is not set up on this Kinnekt server.")
    state, cookie = connections.new_state(shop_id, platform)
    response = redirect(connections.authorize_url(platform, redirect_uri=callback_url(platform), state=state), 302)
    response.set_cookie(COOKIE, cookie, max_age=defaults.AUDIENCE_OAUTH_MAX_AGE_SECONDS, path="/audiences/oauth",
                        httponly=True, secure=current_app.config["SHOPIFY_APP_URL"].startswith("https://"),
                        samesite="Lax")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/" + PLATFORM_PATTERN + "/callback")
def callback(platform: str):
    """Check the state against this browser's cookie, exchange the code, save the tokens and the accounts."""
    try:
        shop_id = connections.check_state(request.args.get("state"), request.cookies.get(COOKIE), platform)
    except connections.OAuthRefused as exc:
        return _refused(403, str(exc))
    shop = Session.get(Shop, shop_id)
    if shop is None or shop.uninstalled_at is not None:
        return _refused(403, "This store no longer uses Kinnekt.")
    if request.args.get("error"):
        return _refused(400, "The connection was cancelled; nothing was saved.")
    code = request.args.get("code", "")
    if not code or len(code) > 2048:
        return _refused(400, "The platform sent no authorization code; nothing was saved.")
    try:
        granted = connections.finish_oauth(platform, code, redirect_uri=callback_url(platform))
    except PlatformError as exc:
        log.warning("ad platform %s: the OAuth code of shop %s was not exchanged: %s", platform, shop_id, exc)
        status = 502 if exc.retryable else 400
        return _refused(status, "The platform did not accept the login; nothing was saved. Please start again.")
    connection = connections.save_grant(Session, shop_id, platform, granted)
    for link_id in connections.links_to_resume(Session, connection):  # a reconnect after a refused token
        tasks.enqueue_sync_audience(link_id)
    response = make_response(render_template(
        "audiences/oauth_result.html", ok=True, accounts=len(granted.accounts),
        label=connections.PLATFORM_LABELS[platform],
        admin_url=f"https://{shop.domain}/admin/apps/{current_app.config['SHOPIFY_API_KEY']}/settings"))
    response.delete_cookie(COOKIE, path="/audiences/oauth")
    response.headers["Cache-Control"] = "no-store"
    return response


_attempts = LocalCounter()
"""Starts and callbacks per address and minute, in this process: each may call a platform and write a row."""


@bp.before_request
def _rate_limit():
    """At most AUDIENCE_OAUTH_PER_MINUTE requests a minute from one address (429 past it)."""
    [count] = _attempts.add([f"ads-oauth:{request.remote_addr}"], 1, 60)
    if count > defaults.AUDIENCE_OAUTH_PER_MINUTE:
        return _refused(429, "Too many attempts; wait a minute and start again.")
    return None
