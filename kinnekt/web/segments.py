"""Segments pages: the list of the shop's segments with their size and freshness."""
from __future__ import annotations

from flask import g
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Segment
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("segments", __name__, url_prefix="/segments")


@bp.get("/")
def index():
    """The segments page: automatic segments first, then the merchant's own, by name."""
    segments = Session.scalars(
        select(Segment)
        .where(Segment.shop_id == g.shop.id)
        .order_by(Segment.kind, Segment.name, Segment.id)
    ).all()
    return hx.render("segments/index.html", "segments/_index.html", segments=segments)
