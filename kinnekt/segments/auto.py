"""Auto segments, one per subscription source: All subscribers, Keyword: <WORD>, Mobile Popup, Shareable Link, Checkout.

Their definitions are ordinary contract definitions (built by the same compiler as the merchant's own)
and cannot be edited, only deleted. Creating them is idempotent through the database: a unique
constraint on (shop, auto_source, keyword) for keyword segments and a partial unique index on
(shop, auto_source) for the others, so calling an `ensure_*` twice, even at the same time, makes one.

Call `ensure_default_segments` when a shop installs, `ensure_keyword_segment` when a keyword is
created and `ensure_checkout_segment` when checkout collection is turned on. A merchant who deleted
one of them gets it back only through those calls.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.models import Keyword, Segment, Shop
from kinnekt.models.segment import BuildStatus
from kinnekt.segments.membership import request_build
from kinnekt.segments.rules import Definition
from kinnekt.segments.service import delete_segment

DEFAULT_SOURCES = (("all", "All subscribers"), ("mobile_popup", "Mobile Popup"), ("shareable_link", "Shareable Link"))
"""Auto segments every shop has from install, in the order the segments list shows them."""
CHECKOUT = ("checkout", "Checkout")
KEYWORD_PREFIX = "Keyword: "
MAX_NAME_ATTEMPTS = 20


def source_definition(source: str) -> Definition:
    """The definition of a source's auto segment (`subscription_source eq <source>`; "all" is everyone)."""
    return {"match": "all", "rules": [{"field": "subscription_source", "op": "eq", "value": source}]}


def keyword_definition(word: str) -> Definition:
    """The definition of a keyword's auto segment: the subscribers who joined by texting that word."""
    return {"match": "all", "rules": [{"field": "keyword", "op": "eq", "value": word.strip().upper()}]}


def _existing(session: OrmSession, shop_id: int, source: str, keyword_id: int | None) -> Segment | None:
    keyword_match = Segment.keyword_id.is_(None) if keyword_id is None else Segment.keyword_id == keyword_id
    return session.scalar(select(Segment).where(Segment.shop_id == shop_id, Segment.auto_source == source,
                                                keyword_match))


def _names(name: str):
    """The segment's name, then "<name> (auto)", "(auto 2)", … for a shop whose own segment took the name."""
    yield name
    yield f"{name} (auto)"
    for n in range(2, MAX_NAME_ATTEMPTS):
        yield f"{name} (auto {n})"


def _ensure(session: OrmSession, shop_id: int, *, source: str, name: str, definition: Definition,
            keyword_id: int | None = None) -> Segment:
    """The shop's auto segment of this source (and keyword), created and queued for its first build if missing."""
    for candidate in _names(name[:240]):
        segment = Segment(shop_id=shop_id, name=candidate, kind="auto", auto_source=source, keyword_id=keyword_id,
                          definition=definition, has_relative_time=False, build_status=BuildStatus.PENDING)
        try:
            with session.begin_nested():
                session.add(segment)
        except IntegrityError:
            # Either this auto segment exists already (the idempotent case), or one of the merchant's
            # segments holds the name: then the next candidate name is tried.
            found = _existing(session, shop_id, source, keyword_id)
            if found is not None:
                return found
            continue
        session.commit()
        request_build(segment, session=session)
        return segment
    raise RuntimeError(f"no free name for the {name!r} auto segment")


def ensure_default_segments(session: OrmSession, shop: Shop) -> list[Segment]:
    """Create the shop's All subscribers, Mobile Popup and Shareable Link segments (and Checkout when it is on)."""
    segments = [_ensure(session, shop.id, source=source, name=name, definition=source_definition(source))
                for source, name in DEFAULT_SOURCES]
    if shop.checkout_collection:
        segments.append(ensure_checkout_segment(session, shop))
    return segments


def ensure_checkout_segment(session: OrmSession, shop: Shop) -> Segment:
    """The shop's Checkout segment (subscribers who agreed at Shopify checkout), created if missing."""
    source, name = CHECKOUT
    return _ensure(session, shop.id, source=source, name=name, definition=source_definition(source))


def ensure_keyword_segment(session: OrmSession, keyword: Keyword) -> Segment:
    """The "Keyword: <WORD>" segment of a keyword, created if missing (deleting the keyword deletes it)."""
    word = keyword.word.strip().upper()
    return _ensure(session, keyword.shop_id, source="keyword", name=f"{KEYWORD_PREFIX}{word}",
                   definition=keyword_definition(word), keyword_id=keyword.id)


@signals.keyword_created.connect
def _add_keyword_segment(session: OrmSession, *, keyword: Keyword) -> Segment:
    """Receiver of kinnekt.signals.keyword_created (sent by kinnekt.subscribers.keywords.create_keyword)."""
    return ensure_keyword_segment(session, keyword)


@signals.keyword_deleting.connect
def _delete_keyword_segment(session: OrmSession, *, keyword: Keyword, confirmed: bool) -> list:
    """Receiver of kinnekt.signals.keyword_deleting (sent by kinnekt.subscribers.keywords.delete_keyword): delete
    the keyword's segment, or, when something uses it and `confirmed` is false, return those usages
    (segments.service.Usage) and delete nothing."""
    segment = session.scalar(select(Segment).where(Segment.shop_id == keyword.shop_id, Segment.auto_source == "keyword",
                                                   Segment.keyword_id == keyword.id))
    return [] if segment is None else delete_segment(session, segment, confirmed=confirmed)
