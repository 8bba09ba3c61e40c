"""The merge tags of a flow message's trigger: {checkout_url}, {product_title}, {order_name}.

A flow's message is the row (campaign, subscriber, occurrence = the run's id), so the run tells which checkout,
order or product started it. {checkout_url} is the checkout's recovery link, which the sender then shortens into
a tracked link like any other URL in the text (kinnekt/campaigns/links.py). A tag without data (a checkout
Shopify sent no recovery link for) becomes empty. Reads models only, so the senders need not import the flows.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Checkout, FlowRun, LineItem, Order, Product

TAGS = {"checkout_url": "Checkout link", "product_title": "Product", "order_name": "Order number"}
"""The trigger's tags a flow message may use, with their labels."""

SAMPLES = {"checkout_url": "https://example.myshopify.com/checkouts/c1/recover", "product_title": "Linen Shirt",
           "order_name": "#1001"}
"""What the tags look like in a preview (no run yet)."""


def values_for(session: OrmSession, campaign, messages) -> dict[int, dict[str, str]]:
    """The trigger tags of each message of a flow campaign, by message id ({} for other campaigns). Only the flow's
    own messages (kind "flow": occurrence = the run's id) have them; the messages an automation queued before it
    became this flow (kind "automation": occurrence = a segment event's id) have none."""
    messages = [message for message in messages if getattr(message, "kind", "flow") == "flow"]
    if getattr(campaign, "kind", None) != "flow" or not messages:
        return {}
    by_run = {message.occurrence: message.id for message in messages}
    runs = session.execute(
        select(FlowRun.id, FlowRun.checkout_token, FlowRun.order_id, FlowRun.product_id)
        .where(FlowRun.id.in_(list(by_run)), FlowRun.shop_id == campaign.shop_id)).all()
    tokens = {run.checkout_token for run in runs if run.checkout_token}
    order_ids = {run.order_id for run in runs if run.order_id}
    product_ids = {run.product_id for run in runs if run.product_id}
    urls = dict(session.execute(select(Checkout.token, Checkout.recovery_url).where(
        Checkout.shop_id == campaign.shop_id, Checkout.token.in_(tokens))).tuples().all()) if tokens else {}
    names = dict(session.execute(select(Order.id, Order.name).where(
        Order.shop_id == campaign.shop_id, Order.id.in_(order_ids))).tuples().all()) if order_ids else {}
    titles = {}
    if product_ids:
        titles = dict(session.execute(select(LineItem.product_id, LineItem.title).where(
            LineItem.shop_id == campaign.shop_id, LineItem.product_id.in_(product_ids))).tuples().all())
        titles.update(session.execute(select(Product.shopify_id, Product.title).where(
            Product.shop_id == campaign.shop_id, Product.shopify_id.in_(product_ids))).tuples().all())
    firsts = {}  # an order's first line item, for a run without a product (a custom item has none)
    if order_ids:
        for order_id, title in session.execute(
                select(LineItem.order_id, LineItem.title).where(LineItem.shop_id == campaign.shop_id,
                                                                LineItem.order_id.in_(order_ids))
                .order_by(LineItem.id.desc())):
            firsts[order_id] = title
    values = {}
    for run in runs:
        values[by_run[run.id]] = {
            "checkout_url": urls.get(run.checkout_token) or "",
            "order_name": names.get(run.order_id) or "",
            "product_title": titles.get(run.product_id) or firsts.get(run.order_id) or "",
        }
    return values
