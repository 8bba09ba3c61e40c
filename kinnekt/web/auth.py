"""Merchant authentication: the App Bridge session token on every merchant route, the bounce page, CSP."""
from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from flask import Blueprint, abort, current_app, g, make_response, redirect, render_template, request, url_for

from kinnekt import shops
from kinnekt.shopify import session_token
from kinnekt.shopify.tokens import InvalidSessionToken, TokenError
from kinnekt.tenancy import bind_shop

bp = Blueprint("auth", __name__)
RETRY_HEADER = "X-Shopify-Retry-Invalid-Session-Request"


def merchant_blueprint(name: str, import_name: str, url_prefix: str | None = None) -> Blueprint:
    """A blueprint whose every route requires a verified session token and is scoped to its shop."""
    blueprint = Blueprint(name, import_name, url_prefix=url_prefix)
    blueprint.before_request(require_merchant)
    return blueprint


def require_merchant():
    """Verify the session token (or the explicit demo mode), then bind the request to the token's shop."""
    config = current_app.config
    if config.get("DEMO_MODE") and not config.get("SHOPIFY_API_SECRET"):
        shop = shops.by_domain(config["DEMO_SHOP_DOMAIN"])
        if shop is None:
            abort(503, description="The demo store is not seeded yet: run `flask --app app demo seed`.")
    else:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else request.args.get("id_token", "")
        try:
            claims = session_token.verify(token, config["SHOPIFY_API_KEY"], config["SHOPIFY_API_SECRET"])
        except session_token.SessionTokenError:
            return _reject()
        try:
            shop = shops.for_session(claims["shop"], token)
        except InvalidSessionToken:  # Shopify refused it for token exchange: App Bridge retries with a new one
            return _reject()
        except TokenError:
            # A shop not installed here is served only once Shopify granted a token: fail closed, change nothing.
            abort(503, description="Kinnekt could not reach Shopify to connect your store. Try again in a minute.")
        g.session_claims = claims
    g.shop = shop
    bind_shop(shop.id)
    return None


def _is_document_request() -> bool:
    return (request.method == "GET" and "Authorization" not in request.headers
            and request.headers.get("HX-Request") != "true" and not request.path.startswith("/api/")
            and request.accept_mimetypes.accept_html)


def _reject():
    if _is_document_request():
        params = request.args.to_dict()
        params.pop("id_token", None)
        reload_url = request.path + ("?" + urlencode(params) if params else "")
        return redirect(url_for("auth.bounce", **params, **{"shopify-reload": reload_url}))
    response = make_response({"error": "invalid session token"}, 401)
    response.headers[RETRY_HEADER] = "1"
    return response


@bp.get("/auth/session-token-bounce")
def bounce():
    """A page with only App Bridge: it fetches a fresh session token and reloads `shopify-reload`."""
    reload_url = request.args.get("shopify-reload", "/")
    parts = urlsplit(reload_url)
    if parts.scheme or parts.netloc or not reload_url.startswith("/"):
        reload_url = "/"  # only our own origin: never an open redirect
    return render_template("auth/bounce.html", reload_url=reload_url)


def frame_ancestors() -> str:
    """The CSP frame-ancestors value: the shop's admin and admin.shopify.com."""
    shop = getattr(g, "shop", None)
    domain = shop.domain if shop is not None else request.args.get("shop", "")
    sources = ["https://admin.shopify.com"]
    if session_token.is_shop_domain(domain):
        sources.insert(0, f"https://{domain}")
    return "frame-ancestors " + " ".join(sources) + ";"
