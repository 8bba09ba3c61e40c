"""The plan card of Settings: pick a plan (its capped amount), approve it on Shopify's page, raise the cap, see
the usage charged this period and what is left under the cap."""
from __future__ import annotations

import json

from flask import Blueprint, current_app, g, make_response, redirect, render_template, request, url_for

from kinnekt import defaults
from kinnekt.billing import allowance, plans, usage
from kinnekt.db import Session
from kinnekt.models.billing import PlanStatus
from kinnekt.shopify.graphql import ShopifyError
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp: Blueprint = merchant_blueprint("billing", __name__, url_prefix="/settings/billing")


def card_context(error: str | None = None, typed: str | None = None) -> dict:
    """What the plan card shows."""
    plan = plans.plan_for(Session, g.shop.id)
    return {"plan": plan, "exempt": plans.exempt(g.shop), "stop_reason": allowance.stop_reason(Session, g.shop),
            "left": plans.remaining(plan), "records": usage.recent(Session, g.shop.id) if plan else [],
            "error": error, "typed": typed if typed is not None else str(defaults.BILLING_DEFAULT_CAP),
            "min_cap": defaults.BILLING_MIN_CAP, "max_cap": defaults.BILLING_MAX_CAP, "statuses": PlanStatus}


def _card(error: str | None = None, typed: str | None = None, *, status: int = 200):
    return make_response(render_template("settings/_billing.html", **card_context(error, typed)), status)


def return_url() -> str:
    """Where Shopify sends the merchant after approving: the app in the admin when embedded, else the app's URL."""
    path = url_for("billing.returned")
    if current_app.config.get("APP_BRIDGE_ENABLED"):
        store = g.shop.domain.removesuffix(".myshopify.com")
        return f"https://admin.shopify.com/store/{store}/apps/{current_app.config['SHOPIFY_API_KEY']}{path}"
    return current_app.config["SHOPIFY_APP_URL"].rstrip("/") + path


@bp.get("/")
def card():
    """The plan card (loaded after the page, so the page never waits on Shopify); a plan waiting for approval
    is read back from Shopify first."""
    plan = plans.plan_for(Session, g.shop.id)
    if plan is not None and plan.status == PlanStatus.PENDING and not g.shop.is_demo:
        try:
            plans.refresh(Session, g.shop)
        except ShopifyError:
            pass  # the card shows what is stored; the update webhook brings the rest
    return _card()


def _to_shopify(url: str):
    """Send the merchant to Shopify's approval page: at the top level of the browser window (the app runs in the
    admin's iframe), through the `kinnekt:open-top` event; without htmx, a plain redirect.

    No toast: the page is left at once, so it would never be read, and leaving cut its loading short (an aborted
    request for the toast's icon). The swapped card shows the plan waiting, with its Approve on Shopify link."""
    if not hx.is_htmx():
        return redirect(url, 303)
    response = _card()
    # After the swap settled (app.js then leaves in the next task: leaving while htmx still handles the response
    # would abort its request).
    response.headers["HX-Trigger-After-Settle"] = json.dumps({"kinnekt:open-top": {"url": url}})
    return response


def _change_plan(change, unreachable: str, done: str):
    """Run a plan change with the capped amount typed: its error on the card (422), Shopify unreachable (502),
    else the merchant to Shopify's approval page (or, when nothing needs approving, the card with `done`)."""
    typed = request.form.get("capped_amount", "")
    try:
        url = change(Session, g.shop, plans.parse_cap(typed))
    except plans.PlanError as exc:
        return hx.toast(_card(str(exc), typed, status=422), str(exc), error=True)
    except ShopifyError:
        return hx.toast(_card(unreachable, typed, status=502), unreachable, error=True)
    return _to_shopify(url) if url else hx.toast(_card(), done)


@bp.post("/plan")
def choose():
    """Pick the plan with the capped amount typed; the merchant approves it on Shopify's page."""
    return _change_plan(lambda session, shop, cap: plans.subscribe(session, shop, cap, return_url()),
                        "Shopify could not be reached to set up the plan; try again in a moment.", "")


@bp.post("/cap")
def raise_cap():
    """Raise the capped amount of the active plan; the merchant approves the change on Shopify's page (the demo
    store's test plan changes at once)."""
    return _change_plan(plans.raise_cap, "Shopify could not be reached to change the cap; try again in a moment.",
                        "The demo store's test plan now has the new capped amount.")


@bp.get("/return")
def returned():
    """The merchant is back from Shopify's page: read the plan back, then show Settings."""
    try:
        plans.refresh(Session, g.shop)
    except ShopifyError:
        pass  # app_subscriptions/update brings the outcome too
    return hx.redirect_to(url_for("settings.index") + "#settings-billing")
