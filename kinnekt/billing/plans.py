"""A shop's plan at Shopify: an app subscription with one capped usage line item, approved by the merchant.

`subscribe` asks Shopify for the subscription (`appSubscriptionCreate` with `appUsagePricingDetails`,
`test: true` outside production) and returns the `confirmationUrl` where the merchant approves it;
`raise_cap` asks for a higher capped amount (`appSubscriptionLineItemUpdate`, approved the same way);
`refresh` reads the subscription back (after the merchant returns); `apply_webhook` applies
`app_subscriptions/update` and `app_subscriptions/approaching_capped_amount`. A plan that becomes billable again
(approved, cap raised) wakes the shop's stopped senders and retries refused usage records.
Call the Shopify parts from views that redirect the merchant (they need the confirmation URL at once) or jobs.
"""
from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal, InvalidOperation

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.db import utcnow
from kinnekt.models import Shop
from kinnekt.models.billing import BillingPlan, PlanStatus
from kinnekt.shopify.graphql import client_for, raise_user_errors
from kinnekt.shopify.values import timestamp

log = logging.getLogger(__name__)

PLAN_NAME = "Kinnekt SMS"
TERMS = ("SMS messages billed per message part by the recipient's country (the price table in Settings), "
         "up to your capped amount every 30 days.")

_LINE_ITEM = """lineItems { id plan { pricingDetails { __typename
  ... on AppUsagePricing { terms cappedAmount { amount currencyCode } balanceUsed { amount currencyCode } } } } }"""

SUBSCRIBE = """
mutation KinnektSubscribe($name: String!, $returnUrl: URL!, $test: Boolean,
                          $lineItems: [AppSubscriptionLineItemInput!]!) {
  appSubscriptionCreate(name: $name, returnUrl: $returnUrl, test: $test, lineItems: $lineItems) {
    appSubscription { id name status test currentPeriodEnd %s }
    confirmationUrl
    userErrors { field message }
  }
}
""" % _LINE_ITEM

RAISE_CAP = """
mutation KinnektRaiseCap($id: ID!, $cappedAmount: MoneyInput!) {
  appSubscriptionLineItemUpdate(id: $id, cappedAmount: $cappedAmount) {
    appSubscription { id status }
    confirmationUrl
    userErrors { field message }
  }
}
"""

SUBSCRIPTION = """
query KinnektSubscription($id: ID!) {
  node(id: $id) { ... on AppSubscription { id name status test currentPeriodEnd %s } }
}
""" % _LINE_ITEM


class PlanError(ValueError):
    """The plan asked for cannot be set up (the message says why, for the merchant)."""


def plan_for(session: OrmSession, shop_id: int) -> BillingPlan | None:
    """The shop's plan, or None when it never picked one."""
    return session.scalar(select(BillingPlan).where(BillingPlan.shop_id == shop_id)
                          .execution_options(populate_existing=True))


def exempt(shop: Shop) -> bool:
    """True when the shop is not billed through Shopify: billing is off for this deployment (a self-hosted
    install), or the shop runs Kinnekt as its own custom app (a static token), which Shopify cannot bill. The
    demo store (a static token of no app) runs on its seeded test plan."""
    if not current_app.config.get("BILLING_REQUIRED", True):
        return True
    return shop.token_kind == "static" and not shop.is_demo


def parse_cap(value) -> Decimal:
    """A capped amount the merchant typed: dollars, between BILLING_MIN_CAP and BILLING_MAX_CAP."""
    try:
        cap = Decimal(str(value or "").strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        raise PlanError("Type the capped amount in dollars, for example 100.") from None
    if not cap.is_finite() or cap.as_tuple().exponent < -2:
        raise PlanError("Type the capped amount in dollars and cents, for example 100 or 99.50.")
    if not defaults.BILLING_MIN_CAP <= cap <= defaults.BILLING_MAX_CAP:
        raise PlanError(f"The capped amount must be between ${defaults.BILLING_MIN_CAP} and "
                        f"${defaults.BILLING_MAX_CAP:,}.")
    return cap.quantize(Decimal("0.01"))


def _money(value: Decimal) -> dict:
    return {"amount": str(value), "currencyCode": "USD"}


def subscribe(session: OrmSession, shop: Shop, cap: Decimal, return_url: str) -> str:
    """Ask Shopify for the plan with this capped amount; store it pending and return its confirmation URL.

    A shop with an active plan raises its cap instead (`raise_cap`); a declined, expired or cancelled plan is
    replaced by the new one. The demo store runs on a test plan and has no Shopify to approve another."""
    if shop.is_demo:
        raise PlanError("The demo store runs on a test plan already; raise its capped amount instead.")
    plan = plan_for(session, shop.id)
    if plan is not None and plan.status in (PlanStatus.ACTIVE, PlanStatus.FROZEN):
        raise PlanError("You already have a plan: raise its capped amount instead.")
    test = bool(current_app.config.get("SHOPIFY_BILLING_TEST"))
    data = client_for(shop).query(SUBSCRIBE, {
        "name": PLAN_NAME, "returnUrl": return_url, "test": test,
        "lineItems": [{"plan": {"appUsagePricingDetails": {"terms": TERMS, "cappedAmount": _money(cap)}}}]})
    result = raise_user_errors(data.get("appSubscriptionCreate"))
    subscription = result.get("appSubscription") or {}
    url = result.get("confirmationUrl")
    if not subscription.get("id") or not url:
        raise PlanError("Shopify did not return the plan to approve; try again.")
    if plan is None:
        plan = BillingPlan(shop_id=shop.id, name=PLAN_NAME, capped_amount=cap)
        session.add(plan)
    plan.subscription_id = subscription["id"]
    plan.line_item_id = _usage_line_item(subscription).get("id")
    plan.status = PlanStatus.PENDING
    plan.capped_amount, plan.requested_cap = cap, None
    plan.balance_used = Decimal(0)
    plan.terms, plan.test, plan.confirmation_url = TERMS, test, url
    plan.cap_reached_at = plan.approaching_at = None
    session.commit()
    return url


def raise_cap(session: OrmSession, shop: Shop, cap: Decimal) -> str | None:
    """Ask Shopify for a higher capped amount on the active plan; returns the confirmation URL to approve it.

    The demo store's test plan has no Shopify to approve the change: its cap is raised at once (None)."""
    plan = plan_for(session, shop.id)
    if plan is None or plan.status != PlanStatus.ACTIVE or (not plan.line_item_id and not shop.is_demo):
        raise PlanError("Only an active plan's capped amount can be raised: pick a plan first.")
    if cap <= plan.capped_amount:
        raise PlanError(f"The new capped amount must be more than the current ${plan.capped_amount:,.2f}.")
    if shop.is_demo:
        update_plan(session, plan, capped_amount=cap)
        return None
    data = client_for(shop).query(RAISE_CAP, {"id": plan.line_item_id, "cappedAmount": _money(cap)})
    result = raise_user_errors(data.get("appSubscriptionLineItemUpdate"))
    url = result.get("confirmationUrl")
    if not url:
        raise PlanError("Shopify did not return the change to approve; try again.")
    plan.requested_cap, plan.confirmation_url = cap, url
    session.commit()
    return url


def _usage_line_item(subscription: dict) -> dict:
    for item in subscription.get("lineItems") or []:
        details = ((item or {}).get("plan") or {}).get("pricingDetails") or {}
        if details.get("__typename") == "AppUsagePricing":
            return {"id": item.get("id"), **details}
    return {}


def _amount(money) -> Decimal | None:
    try:
        return Decimal(str((money or {}).get("amount")))
    except (InvalidOperation, AttributeError):
        return None


def refresh(session: OrmSession, shop: Shop) -> BillingPlan | None:
    """Read the plan back from Shopify (status, capped amount, balance used, period end) and store it."""
    plan = plan_for(session, shop.id)
    if plan is None or not plan.subscription_id:
        return plan
    node = client_for(shop).query(SUBSCRIPTION, {"id": plan.subscription_id}).get("node") or {}
    if node.get("id") != plan.subscription_id:
        return plan
    item = _usage_line_item(node)
    update_plan(session, plan, status=node.get("status"), capped_amount=_amount(item.get("cappedAmount")),
                balance_used=_amount(item.get("balanceUsed")), period_ends_at=timestamp(node.get("currentPeriodEnd")),
                line_item_id=item.get("id"))
    return plan


def update_plan(session: OrmSession, plan: BillingPlan, *, status: str | None = None,
                capped_amount: Decimal | None = None, balance_used: Decimal | None = None,
                period_ends_at: dt.datetime | None = None, line_item_id: str | None = None) -> bool:
    """Store what Shopify says of the plan (None: unchanged); True when it became billable with room under the
    cap again (then the shop's stopped senders are woken and its refused records asked for again)."""
    was_open = sending_open(plan)
    status = (status or "").lower()
    if status == "accepted":  # the older API's word for approved and not yet active
        status = PlanStatus.ACTIVE
    if status in set(PlanStatus):
        plan.status = status
    if capped_amount is not None and capped_amount != plan.capped_amount:
        if capped_amount > plan.capped_amount:
            plan.cap_reached_at = None  # room again: Shopify takes records up to the new cap
            plan.approaching_at = None
        plan.capped_amount = capped_amount
        if plan.requested_cap is not None and capped_amount >= plan.requested_cap:
            plan.requested_cap = None
            plan.confirmation_url = None
    if balance_used is not None:
        if plan.cap_reached_at is not None and balance_used < plan.balance_used:
            plan.cap_reached_at = None  # a new 30-day period began
        plan.balance_used = balance_used
    if period_ends_at is not None:
        if plan.period_ends_at is not None and period_ends_at > plan.period_ends_at:
            plan.cap_reached_at = plan.approaching_at = None  # a new period: the cap is free again
        plan.period_ends_at = period_ends_at
    if line_item_id:
        plan.line_item_id = line_item_id
    if plan.status == PlanStatus.ACTIVE and plan.requested_cap is None:
        plan.confirmation_url = None
    session.commit()
    reopened = not was_open and sending_open(plan)
    if reopened:
        from kinnekt.billing import tasks
        from kinnekt.campaigns.lifecycle import resume_after_billing
        resume_after_billing(session, plan.shop_id)  # the senders that stopped on billing go on
        tasks.enqueue_retry_usage(plan.shop_id, refused=True)  # records refused above the old cap, again
    return reopened


def sending_open(plan: BillingPlan | None) -> bool:
    """True when the plan lets messages go out: active, and Shopify has not refused a record above the cap."""
    return plan is not None and plan.status in PlanStatus.BILLABLE and plan.cap_reached_at is None


def remaining(plan: BillingPlan | None) -> Decimal:
    """What is left under the cap this period (never below zero)."""
    if plan is None:
        return Decimal(0)
    return max(Decimal(0), plan.capped_amount - plan.balance_used)


def mark_cap_reached(session: OrmSession, shop_id: int, *, at: dt.datetime | None = None) -> None:
    """Shopify refused a usage record above the capped amount: the shop sends nothing more until it is raised."""
    session.execute(update(BillingPlan).where(BillingPlan.shop_id == shop_id, BillingPlan.cap_reached_at.is_(None))
                    .values(cap_reached_at=at or utcnow()).execution_options(synchronize_session=False))
    session.commit()


@signals.subscription_changed.connect
def apply_webhook(session: OrmSession, *, shop: Shop, topic: str, payload: dict) -> str:
    """Apply `app_subscriptions/update` or `app_subscriptions/approaching_capped_amount` to the shop's plan."""
    if topic == "app_subscriptions/update":
        body = payload.get("app_subscription")
        if not isinstance(body, dict):
            return "bad payload: no app_subscription"
    else:
        body = payload
    gid = body.get("admin_graphql_api_id")
    plan = plan_for(session, shop.id)
    if plan is None or not gid or gid != plan.subscription_id:
        return f"subscription {gid} is not this shop's plan: ignored"
    cap = _decimal(body.get("capped_amount"))
    used = _decimal(body.get("balance_used"))
    reopened = update_plan(session, plan, status=body.get("status"), capped_amount=cap, balance_used=used)
    if topic == "app_subscriptions/approaching_capped_amount":
        plan.approaching_at = utcnow()
        session.commit()
        return f"plan at {plan.balance_used} of {plan.capped_amount}: approaching the cap"
    return f"plan {plan.status}" + ("; sending resumes" if reopened else "")


def _decimal(value) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None
