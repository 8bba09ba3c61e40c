"""Auto segments: one per source (and per keyword), idempotent through the database, built by the same compiler."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kinnekt.db import Session
from kinnekt.demo import AUTO_SEGMENTS
from kinnekt.models import Keyword, Segment
from kinnekt.queue import get_queue
from kinnekt.segments import auto
from kinnekt.segments.rules import normalise
from tests.factories import subscriber
from tests.test_segment_membership import member_ids

pytestmark = pytest.mark.usefixtures("finished_jobs")


def auto_segments(db, shop) -> dict[str, Segment]:
    db.expire_all()
    rows = db.scalars(select(Segment).where(Segment.shop_id == shop.id, Segment.kind == "auto")).all()
    return {s.name: s for s in rows}


def test_the_names_sources_and_definitions_are_the_ones_the_demo_uses():
    assert tuple(auto.DEFAULT_SOURCES) + (auto.CHECKOUT,) == tuple(AUTO_SEGMENTS)
    for source, _name in AUTO_SEGMENTS:
        definition = auto.source_definition(source)
        assert definition == {"match": "all", "rules": [{"field": "subscription_source", "op": "eq", "value": source}]}
        assert normalise(definition) == definition
    keyword = auto.keyword_definition(" sale ")
    assert keyword == {"match": "all", "rules": [{"field": "keyword", "op": "eq", "value": "SALE"}]}
    assert normalise(keyword) == keyword


def test_default_segments_are_created_once(db, shop):
    first = auto.ensure_default_segments(db, shop)
    second = auto.ensure_default_segments(db, shop)
    assert [s.id for s in first] == [s.id for s in second]
    segments = auto_segments(db, shop)
    assert sorted(segments) == ["All subscribers", "Mobile Popup", "Shareable Link"]  # checkout collection is off
    assert {s.auto_source for s in segments.values()} == {"all", "mobile_popup", "shareable_link"}
    assert all(s.keyword_id is None and not s.editable and not s.has_relative_time for s in segments.values())


def test_checkout_segment_comes_with_checkout_collection_and_only_once(db, shop):
    shop.checkout_collection = True
    db.commit()
    auto.ensure_default_segments(db, shop)
    checkout = auto.ensure_checkout_segment(db, shop)
    assert auto.ensure_checkout_segment(db, shop).id == checkout.id
    segments = auto_segments(db, shop)
    assert sorted(segments) == ["All subscribers", "Checkout", "Mobile Popup", "Shareable Link"]
    assert segments["Checkout"].auto_source == "checkout"


def test_one_segment_per_keyword(db, shop):
    sale = Keyword(shop_id=shop.id, word="SALE")
    vip = Keyword(shop_id=shop.id, word="VIP")
    db.add_all([sale, vip])
    db.commit()
    segment = auto.ensure_keyword_segment(db, sale)
    assert auto.ensure_keyword_segment(db, sale).id == segment.id
    other = auto.ensure_keyword_segment(db, vip)
    assert (segment.name, segment.auto_source, segment.keyword_id) == ("Keyword: SALE", "keyword", sale.id)
    assert other.name == "Keyword: VIP" and other.id != segment.id
    assert segment.definition == auto.keyword_definition("SALE")
    # Deleting the keyword takes its segment along (the foreign key cascades); subscribers stay.
    member = subscriber(db, shop, source="keyword", keyword="SALE", keyword_id=sale.id)
    db.delete(sale)
    db.commit()
    assert sorted(auto_segments(db, shop)) == ["Keyword: VIP"]
    assert db.get(type(member), member.id) is not None


def test_the_database_refuses_a_second_auto_segment_of_a_source(db, shop):
    auto.ensure_default_segments(db, shop)
    db.add(Segment(shop_id=shop.id, name="Another popup", kind="auto", auto_source="mobile_popup",
                   definition=auto.source_definition("mobile_popup")))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()
    # Manual segments have no source and are not held by it.
    for n in range(2):
        db.add(Segment(shop_id=shop.id, name=f"Mine {n}", kind="manual", definition=auto.source_definition("all")))
    db.commit()


def test_a_merchant_segment_holding_the_name_gets_the_auto_one_a_suffix(db, shop):
    db.add(Segment(shop_id=shop.id, name="Mobile Popup", kind="manual", definition=auto.source_definition("all")))
    db.commit()
    auto.ensure_default_segments(db, shop)
    auto.ensure_default_segments(db, shop)
    segments = auto_segments(db, shop)
    assert sorted(segments) == ["All subscribers", "Mobile Popup (auto)", "Shareable Link"]


def test_each_shop_gets_its_own(db, shop, other_shop):
    auto.ensure_default_segments(db, shop)
    auto.ensure_default_segments(db, other_shop)
    assert len(auto_segments(db, shop)) == len(auto_segments(db, other_shop)) == 3
    assert db.scalar(select(func.count()).select_from(Segment)) == 6


def test_ensuring_at_the_same_time_makes_one_of_each(app, db, shop):
    barrier = threading.Barrier(3)
    errors = []

    def ensure():
        with app.app_context():
            try:
                barrier.wait(10)
                session = Session()
                auto.ensure_default_segments(session, session.get(type(shop), shop.id))
            except BaseException as exc:
                errors.append(exc)
            finally:
                Session.remove()

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(auto_segments(db, shop)) == ["All subscribers", "Mobile Popup", "Shareable Link"]


def test_auto_segments_are_built_with_the_right_members(app, db, shop, other_shop):
    shop.checkout_collection = True
    db.commit()
    word = Keyword(shop_id=shop.id, word="SALE")
    db.add(word)
    db.commit()
    popup = subscriber(db, shop, source="mobile_popup")
    link = subscriber(db, shop, source="shareable_link")
    checkout = subscriber(db, shop, source="checkout")
    keyword = subscriber(db, shop, source="keyword", keyword="SALE", keyword_id=word.id)
    other_keyword = subscriber(db, shop, source="keyword", keyword="HELLO")
    subscriber(db, shop, source="mobile_popup", status="pending")  # not confirmed yet: never a member
    subscriber(db, other_shop, source="mobile_popup")

    auto.ensure_default_segments(db, shop)
    auto.ensure_keyword_segment(db, word)
    assert get_queue().drain(30)

    segments = auto_segments(db, shop)
    assert all(s.build_status == "done" for s in segments.values())
    assert member_ids(db, segments["All subscribers"]) == {popup.id, link.id, checkout.id, keyword.id,
                                                           other_keyword.id}
    assert member_ids(db, segments["Mobile Popup"]) == {popup.id}
    assert member_ids(db, segments["Shareable Link"]) == {link.id}
    assert member_ids(db, segments["Checkout"]) == {checkout.id}
    assert member_ids(db, segments["Keyword: SALE"]) == {keyword.id}
    assert segments["All subscribers"].member_count == 5
