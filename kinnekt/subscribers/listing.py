"""The subscribers list: the filters a merchant can apply (status, source, keyword, country, a search), the query
they make, and the choices each filter offers."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Customer, Keyword, Subscriber
from kinnekt.models.subscriber import SOURCES, STATUSES, SubscriberStatus
from kinnekt.subscribers import search

QUERY_MAX_LENGTH = 100
"""Characters of the search box that are searched for; the rest is dropped."""


@dataclass(frozen=True)
class Filters:
    """The list's filters; "" is "all" (and an empty search)."""

    query: str = ""
    status: str = ""
    source: str = ""
    keyword: str = ""
    country: str = ""

    @classmethod
    def from_args(cls, args: Mapping) -> Filters:
        """The filters of a request's query string; an unknown or malformed value is "all", never an error."""
        query = str(args.get("q", "")).strip()[:QUERY_MAX_LENGTH]
        status = args.get("status", "")
        status = status if status in STATUSES else ""
        source = args.get("source", "")
        source = source if source in SOURCES else ""
        keyword = str(args.get("keyword", "")).strip().upper()
        keyword = keyword if re.fullmatch(r"[A-Z0-9]{1,32}", keyword) else ""
        country = str(args.get("country", "")).strip().upper()
        country = country if re.fullmatch(r"[A-Z]{2}", country) else ""
        return cls(query, status, source, keyword, country)

    def params(self) -> dict[str, str]:
        """The filters that are set, as query-string parameters (for page links); empty when none is."""
        return {key: value for key, value in (("q", self.query), ("status", self.status), ("source", self.source),
                                              ("keyword", self.keyword), ("country", self.country)) if value}


def statement(shop_id: int, filters: Filters):
    """The shop's subscribers that pass the filters, newest first (a Select of Subscriber)."""
    selected = (
        select(Subscriber)
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .where(Subscriber.shop_id == shop_id)
    )
    if filters.status:
        selected = selected.where(Subscriber.status == filters.status)
    if filters.source:
        selected = selected.where(Subscriber.source == filters.source)
    if filters.keyword:
        selected = selected.where(Subscriber.keyword == filters.keyword)
    if filters.country:
        selected = selected.where(Subscriber.country == filters.country)
    if filters.query:
        selected = selected.where(search.matches(filters.query))
    return selected.order_by(Subscriber.created_at.desc(), Subscriber.id.desc())


def suppressed_among(session: OrmSession, listed) -> int:
    """How many of the listed subscribers (a `statement`) are subscribed but suppressed: counted in the list, left
    out of segments."""
    suppressed = (listed.where(Subscriber.status == SubscriberStatus.SUBSCRIBED, Subscriber.suppressed_at.is_not(None))
                  .order_by(None).with_only_columns(Subscriber.id))
    return session.scalar(select(func.count()).select_from(suppressed.subquery())) or 0


def keywords(session: OrmSession, shop_id: int, selected: str) -> list[str]:
    """The shop's keywords (and the selected word, which may belong to a deleted keyword), in order."""
    words = set(session.scalars(select(Keyword.word).where(Keyword.shop_id == shop_id)))
    return sorted(words | ({selected} if selected else set()))


def countries(session: OrmSession, shop_id: int, selected: str) -> list[str]:
    """The countries the shop's subscribers are in (and the selected one), in order."""
    codes = set(session.scalars(select(distinct(Subscriber.country)).where(
        Subscriber.shop_id == shop_id, Subscriber.country.is_not(None))))
    return sorted(codes | ({selected} if selected else set()))
