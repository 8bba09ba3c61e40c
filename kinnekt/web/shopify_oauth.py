"""Public install endpoints for the authorization-code fallback (non-embedded installs): /auth/install, /auth/callback.

Both are signed by Shopify, not by a session token, so they are not merchant blueprints: /auth/callback
checks the query HMAC, the anchored shop domain, the timestamp and the state nonce (kept in a signed,
HttpOnly, SameSite=Lax cookie bound to the browser that started the install) before exchanging the code.
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, redirect, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from kinnekt import defaults
from kinnekt.shopify import install, oauth, tokens

log = logging.getLogger(__name__)

bp = Blueprint("shopify_oauth", __name__, url_prefix="/auth")
STATE_COOKIE = "kinnekt_oauth_state"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="kinnekt-oauth-state")


def _callback_url() -> str:
    return current_app.config["SHOPIFY_APP_URL"].rstrip("/") + "/auth/callback"


@bp.get("/install")
def start_install():
    """Send the merchant to Shopify's grant screen, remembering a fresh state nonce in a signed cookie."""
    config = current_app.config
    try:
        if "hmac" in request.args:  # Shopify's own install link is signed; a typed ?shop= link is not
            shop = oauth.verify_signed_request(request.args, config["SHOPIFY_API_SECRET"])
        else:
            shop = oauth.checked_shop(request.args.get("shop"))
    except oauth.OAuthRefused as exc:
        abort(400, description=str(exc))
    state = oauth.new_state()
    target = oauth.authorize_redirect(shop, api_key=config["SHOPIFY_API_KEY"], scopes=config["SCOPES"],
                                      redirect_uri=_callback_url(), state=state)
    response = redirect(target, 302)
    response.set_cookie(STATE_COOKIE, _serializer().dumps({"state": state, "shop": shop}),
                        max_age=defaults.OAUTH_STATE_MAX_AGE_SECONDS, path="/auth", httponly=True,
                        secure=config["SHOPIFY_APP_URL"].startswith("https://"), samesite="Lax")
    return response


@bp.get("/callback")
def callback():
    """Verify Shopify's redirect back (HMAC, shop, timestamp, state), exchange the code, start the install."""
    config = current_app.config
    try:
        shop = oauth.verify_signed_request(request.args, config["SHOPIFY_API_SECRET"])
    except oauth.OAuthRefused as exc:
        abort(400, description=str(exc))
    try:
        remembered = _serializer().loads(request.cookies.get(STATE_COOKIE, ""),
                                         max_age=defaults.OAUTH_STATE_MAX_AGE_SECONDS)
    except BadSignature:  # also SignatureExpired
        remembered = {}
    if not oauth.same_state(remembered.get("state"), request.args.get("state")) or remembered.get("shop") != shop:
        abort(403, description="This install link was not started in this browser (state mismatch); "
                               "start the install again from your Shopify admin.")
    code = request.args.get("code", "")
    if not code:
        abort(400, description="Shopify sent no authorization code.")
    try:
        granted = tokens.exchange_authorization_code(shop, code)
    except tokens.GrantRejected as exc:
        log.warning("authorization code for %s refused: %s", shop, exc)
        abort(400, description="Shopify refused the authorization code; start the install again.")
    except tokens.TokenError as exc:
        log.error("authorization code exchange for %s failed: %s", shop, exc)
        abort(502, description="Shopify could not be reached to finish the install; please try again.")
    install.connect_with_tokens(shop, granted)
    response = redirect(f"https://{shop}/admin/apps/{config['SHOPIFY_API_KEY']}", 302)
    response.delete_cookie(STATE_COOKIE, path="/auth")
    return response
