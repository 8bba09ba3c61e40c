"""Keywords pages: the words customers text in to subscribe, and how many joined by each."""
from __future__ import annotations

from flask import g
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Keyword, Subscriber
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("keywords", __name__, url_prefix="/keywords")


@bp.get("/")
def index():
    """The keywords page: each keyword with the number of subscribers who joined by it (any status now)."""
    joined = (
        select(Subscriber.keyword_id, func.count().label("joined"))
        .where(Subscriber.shop_id == g.shop.id, Subscriber.keyword_id.is_not(None))
        .group_by(Subscriber.keyword_id)
        .subquery()
    )
    rows = Session.execute(
        select(Keyword, func.coalesce(joined.c.joined, 0).label("joined"))
        .outerjoin(joined, joined.c.keyword_id == Keyword.id)
        .where(Keyword.shop_id == g.shop.id)
        .order_by(Keyword.word)
    ).all()
    return hx.render("keywords/index.html", "keywords/_index.html", keywords=rows)
