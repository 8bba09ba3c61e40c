"""Keyword domain: create (normalised, validated, unique per shop, with its auto segment), edit, deactivate, delete."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from kinnekt.models import Campaign, CampaignSegment, Keyword, Segment, Subscriber
from kinnekt.subscribers import keywords as kw
from kinnekt.subscribers import optin
from tests.conftest import make_shop

pytestmark = pytest.mark.usefixtures("settled_jobs")


def _count(db, model):
    return db.scalar(select(func.count()).select_from(model))


def _segment(db, keyword):
    return db.scalar(select(Segment).where(Segment.keyword_id == keyword.id))


def test_create_normalises_and_makes_the_keyword_segment(db):
    shop = make_shop()
    keyword = kw.create_keyword(db(), shop, word="  sale10 ", reply_text="  Here is 10% off: SALE10  ")
    assert (keyword.word, keyword.reply_text, keyword.active) == ("SALE10", "Here is 10% off: SALE10", True)
    segment = _segment(db, keyword)
    assert (segment.name, segment.kind, segment.auto_source) == ("Keyword: SALE10", "auto", "keyword")
    assert segment.definition["rules"][0] == {"field": "keyword", "op": "eq", "value": "SALE10"}


@pytest.mark.parametrize("word, message", [
    ("", "Enter a keyword."),
    ("   ", "Enter a keyword."),
    ("A", "2 to 20 letters or digits"),
    ("X" * 21, "2 to 20 letters or digits"),
    ("SALE NOW", "2 to 20 letters or digits"),
    ("SALE!", "2 to 20 letters or digits"),
    ("ÉTÉ", "2 to 20 letters or digits"),
    ("stop", "STOP is reserved"),
    ("Help", "HELP is reserved"),
    ("unstop", "UNSTOP is reserved"),
    ("y", "2 to 20 letters or digits"),
    ("yes", "YES is reserved"),
    ("OptOut", "OPTOUT is reserved"),
])
def test_bad_words_are_refused_and_nothing_saved(db, word, message):
    shop = make_shop()
    with pytest.raises(kw.KeywordError) as err:
        kw.create_keyword(db(), shop, word=word, reply_text="hi")
    assert message in str(err.value) and err.value.field == "word"
    assert _count(db, Keyword) == 0 and _count(db, Segment) == 0


def test_word_is_unique_per_shop(db):
    shop, other = make_shop(), make_shop("beta.myshopify.com")
    kw.create_keyword(db(), shop, word="SALE")
    with pytest.raises(kw.KeywordError, match="already have the keyword SALE"):
        kw.create_keyword(db(), shop, word="sale")
    assert kw.create_keyword(db(), other, word="SALE").shop_id == other.id
    assert _count(db, Keyword) == 2 and _count(db, Segment) == 2


def test_reply_text_too_long_is_refused(db):
    shop = make_shop()
    with pytest.raises(kw.KeywordError) as err:
        kw.create_keyword(db(), shop, word="SALE", reply_text="x" * (kw.MAX_REPLY_LENGTH + 1))
    assert err.value.field == "reply_text"
    assert _count(db, Keyword) == 0


def test_update_reply_and_active_but_never_the_word(db):
    shop = make_shop()
    keyword = kw.create_keyword(db(), shop, word="SALE", reply_text="old")
    kw.update_keyword(db(), keyword, word="sale", reply_text="new text", active=False)
    assert (keyword.word, keyword.reply_text, keyword.active) == ("SALE", "new text", False)
    with pytest.raises(kw.KeywordError, match="can't be changed"):
        kw.update_keyword(db(), keyword, word="DEALS")
    with pytest.raises(kw.KeywordError):
        kw.update_keyword(db(), keyword, reply_text="x" * 2000)
    db.expire_all()
    assert db.get(Keyword, keyword.id).reply_text == "new text"


def test_deactivate(db):
    shop = make_shop()
    keyword = kw.create_keyword(db(), shop, word="SALE")
    kw.deactivate(db(), keyword)
    assert db.get(Keyword, keyword.id).active is False
    kw.set_active(db(), keyword, True)
    assert db.get(Keyword, keyword.id).active is True


def test_delete_keeps_subscribers_and_removes_the_segment(db):
    shop = make_shop(double_opt_in=False)
    keyword = kw.create_keyword(db(), shop, word="SALE")
    sub = optin.subscribe(db(), shop, "+447400123456", source="keyword", keyword=keyword, consent_text="Texted SALE")
    assert kw.delete_keyword(db(), keyword) == []
    db.expire_all()
    sub = db.get(Subscriber, sub.id)
    assert (sub.keyword, sub.keyword_id, sub.status) == ("SALE", None, "subscribed")
    assert _count(db, Keyword) == 0 and _count(db, Segment) == 0


def test_delete_used_by_a_scheduled_campaign_asks_first(db):
    shop = make_shop()
    keyword = kw.create_keyword(db(), shop, word="SALE")
    campaign = Campaign(shop_id=shop.id, name="Spring sale", body="Hi", status="scheduled")
    db.add(campaign)
    db.flush()
    db.add(CampaignSegment(shop_id=shop.id, campaign_id=campaign.id, segment_id=_segment(db, keyword).id))
    db.commit()
    usages = kw.delete_keyword(db(), keyword)
    assert [u.label for u in usages] == ["Campaign “Spring sale” (Scheduled)"]
    assert _count(db, Keyword) == 1 and _count(db, Segment) == 1
    kw.delete_keyword(db(), keyword, confirmed=True)
    assert _count(db, Keyword) == 0 and _count(db, Segment) == 0
