"""Subscribers pages: the audience, searchable by phone or name and filtered by status and source."""
from __future__ import annotations

import re

from flask import g, request
from sqlalchemy import or_, select

from kinnekt import defaults
from kinnekt.models import Customer, Subscriber
from kinnekt.models.subscriber import SOURCE_LABELS, SOURCES, STATUSES
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import page_number, paginate

bp = merchant_blueprint("subscribers", __name__, url_prefix="/subscribers")

TABLE_ID = "subscribers-table"
"""The id of the table partial; the search box and filters target it."""

STATUS_LABELS = {"pending": "Pending", "subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}


@bp.get("/")
def index():
    """The subscribers page, or only its table when the search box or a filter asks for it.

    Unknown filter values and bad page numbers fall back to "all" and page 1 (the form then shows what
    was applied); a page past the end shows the last page.
    """
    query = request.args.get("q", "").strip()[:100]
    status = request.args.get("status", "")
    status = status if status in STATUSES else ""
    source = request.args.get("source", "")
    source = source if source in SOURCES else ""

    statement = (
        select(Subscriber)
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .where(Subscriber.shop_id == g.shop.id)
    )
    if status:
        statement = statement.where(Subscriber.status == status)
    if source:
        statement = statement.where(Subscriber.source == source)
    if query:
        statement = statement.where(_matches(query))
    statement = statement.order_by(Subscriber.created_at.desc(), Subscriber.id.desc())

    params = {key: value for key, value in (("q", query), ("status", status), ("source", source)) if value}
    results = paginate(statement, page_number(request.args.get("page")), defaults.PAGE_SIZE, params)
    context = {
        "results": results, "q": query, "status": status, "source": source, "filtered": bool(params),
        "status_options": [("", "All statuses")] + [(s, STATUS_LABELS[s]) for s in STATUSES],
        "source_options": [("", "All sources")] + [(s, SOURCE_LABELS[s]) for s in SOURCES],
        "status_labels": STATUS_LABELS, "table_id": TABLE_ID,
    }
    if hx.is_htmx() and request.headers.get("HX-Target") == TABLE_ID:
        return hx.render("subscribers/index.html", "subscribers/_table.html", **context)
    return hx.render("subscribers/index.html", "subscribers/_index.html", **context)


def _matches(query: str):
    """Phone digits (spaces, dashes and brackets ignored) or a first / last name containing the text."""
    conditions = [
        Subscriber.first_name.icontains(query, autoescape=True),
        Customer.first_name.icontains(query, autoescape=True),
        Customer.last_name.icontains(query, autoescape=True),
        (Customer.first_name + " " + Customer.last_name).icontains(query, autoescape=True),
    ]
    digits = re.sub(r"\D", "", query)
    if digits and re.fullmatch(r"[\d\s()+.\-]+", query):
        conditions.append(Subscriber.phone.contains(digits, autoescape=True))
    return or_(*conditions)
