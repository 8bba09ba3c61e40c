"""The shareable link: its public page (sms: link, QR), its settings, and joins through it counted as Shareable Link."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from kinnekt.models import Keyword, Segment, SegmentMember, Shop, Subscriber
from kinnekt.segments.auto import ensure_default_segments
from kinnekt.subscribers import optin, share
from kinnekt.subscribers.keywords import create_keyword
from tests.conftest import make_shop
from tests.helpers import drain
from tests.test_sms_inbound import PHONE, params, post

pytestmark = pytest.mark.usefixtures("settled_jobs")

SENDER = "15550100200"


@pytest.fixture
def shop(db):
    """A demo shop texting from SENDER, with a JOIN keyword for the link and a SALE keyword for posters."""
    shop = make_shop("acme-store.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True)
    create_keyword(db(), shop, word="JOIN", reply_text="Welcome to Acme!")
    create_keyword(db(), shop, word="SALE")
    shop.share_keyword = "JOIN"
    db.commit()
    ensure_default_segments(db(), shop)
    return shop


@pytest.fixture
def merchant(shop, token_for):
    return {"Authorization": f"Bearer {token_for(shop.domain)}", "HX-Request": "true"}


# --- the public page --------------------------------------------------------------------------------

def test_page_has_the_sms_link_and_its_qr(client, shop):
    response = client.get("/j/acme-store")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'href="sms:+15550100200?&amp;body=JOIN"' in html
    assert "Text JOIN to join" in html and "+15550100200" in html
    svg = re.search(r"<svg[^>]*>.*?</svg>", html, re.S).group(0)
    assert "<title>Text JOIN to +15550100200</title>" in svg and 'viewBox="0 0' in svg and "<path" in svg
    assert "Reply STOP to unsubscribe" in html
    assert "app-bridge" not in html  # a public page, not the embedded admin


def test_qr_encodes_the_sms_link():
    import segno
    svg = share.qr_svg("sms:+15550100200?&body=JOIN", title="t")
    expected = segno.make("sms:+15550100200?&body=JOIN", error="m")
    # The SVG path is drawn from the symbol's modules: same data, same drawing; other data differs.
    assert svg == expected.svg_inline(scale=6, border=2, title="t", omitsize=True, dark="#000", light="#fff",
                                      svgclass="qr")
    assert svg != share.qr_svg("sms:+15550100200?&body=SALE", title="t")


def test_sms_uri_escapes_the_body():
    assert share.sms_uri("+15550100200", "JOIN") == "sms:+15550100200?&body=JOIN"
    assert share.sms_uri("+15550100200", "JOIN NOW") == "sms:+15550100200?&body=JOIN%20NOW"


@pytest.mark.parametrize("own_sender", [None, "ACME"])  # none, or a name (texts to it go to the default number)
def test_default_sender_is_used_when_the_shop_has_no_number(app, client, db, shop, monkeypatch, own_sender):
    monkeypatch.setitem(app.config, "VONAGE_SENDER", "15550109999")
    shop.sender = own_sender
    db.commit()
    assert 'href="sms:+15550109999?&amp;body=JOIN"' in client.get("/j/acme-store").get_data(as_text=True)


def test_no_number_to_text_means_no_page(app, client, db, shop, merchant, monkeypatch):
    monkeypatch.setitem(app.config, "VONAGE_SENDER", "")
    shop.sender = None
    db.commit()
    assert client.get("/j/acme-store").status_code == 404
    html = client.get("/settings/signup/share", headers=merchant).get_data(as_text=True)
    assert "No number to text" in html and "<svg" not in html


@pytest.mark.parametrize("change", ["off", "deactivated", "deleted", "uninstalled", "unknown"])
def test_page_is_not_found_when_the_link_does_not_work(client, db, shop, change):
    handle = "acme-store"
    keyword = db.scalar(select(Keyword).where(Keyword.word == "JOIN"))
    if change == "off":
        shop.share_keyword = None
    elif change == "deactivated":
        keyword.active = False
    elif change == "deleted":
        db.delete(keyword)
    elif change == "uninstalled":
        shop.uninstalled_at = shop.installed_at
    else:
        handle = "nobody"
    db.commit()
    response = client.get(f"/j/{handle}")
    assert response.status_code == 404 and "This sign-up link is not available" in response.get_data(as_text=True)


def test_page_of_another_shop_shows_that_shop(client, db, shop):
    other = make_shop("beta.myshopify.com", sender="15550100300", is_demo=True)
    create_keyword(db(), other, word="BETA")
    other.share_keyword = "BETA"
    db.commit()
    html = client.get("/j/beta").get_data(as_text=True)
    assert "sms:+15550100300?&amp;body=BETA" in html and "JOIN" not in html


# --- joining through it -----------------------------------------------------------------------------

def test_texting_the_link_keyword_joins_with_source_shareable_link(client, db, shop):
    post(client, params("JOIN"))
    drain()
    db.expire_all()
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.phone, subscriber.status, subscriber.source, subscriber.keyword) == (
        PHONE, "pending", "shareable_link", "JOIN")
    post(client, params("Y"))
    drain()
    db.expire_all()
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.status, subscriber.source) == ("subscribed", "shareable_link")
    names = set(db.scalars(select(Segment.name).join(SegmentMember, SegmentMember.segment_id == Segment.id)
                           .where(SegmentMember.subscriber_id == subscriber.id)))
    assert {"Shareable Link", "Keyword: JOIN"} <= names and "Mobile Popup" not in names


def test_texting_another_keyword_joins_with_source_keyword(client, db, shop):
    post(client, params("SALE"))
    drain()
    db.expire_all()
    assert db.scalar(select(Subscriber.source)) == "keyword"


def test_source_for_keyword_rule(db, shop):
    join, sale = (db.scalar(select(Keyword).where(Keyword.word == w)) for w in ("JOIN", "SALE"))
    assert (share.source_for_keyword(shop, join), share.source_for_keyword(shop, sale)) == ("shareable_link", "keyword")
    shop.share_keyword = None
    assert share.source_for_keyword(shop, join) == "keyword"


def test_a_subscribed_number_keeps_its_first_source(client, db, shop):
    optin.subscribe(db, shop, PHONE, source="mobile_popup", consent_text="popup", double_opt_in=False)
    post(client, params("JOIN"))
    drain()
    db.expire_all()
    assert db.scalar(select(Subscriber.source)) == "mobile_popup"


# --- settings ---------------------------------------------------------------------------------------

def test_settings_card_shows_the_link_qr_and_copy_button(client, merchant, shop):
    html = client.get("/settings/signup/share", headers=merchant).get_data(as_text=True)
    assert 'id="settings-share"' in html
    assert 'value="https://kinnekt.test/j/acme-store"' in html
    assert "sms:+15550100200?&amp;body=JOIN" in html and "<svg" in html and "Copy link" in html
    assert '<option value="JOIN" selected>JOIN</option>' in html


def test_choosing_a_keyword_and_turning_the_link_off(client, db, merchant, shop):
    response = client.post("/settings/signup/share", headers=merchant, data={"keyword": "sale"})
    assert response.status_code == 200 and "body=SALE" in response.get_data(as_text=True)
    db.expire_all()
    assert db.get(Shop, shop.id).share_keyword == "SALE"
    html = client.post("/settings/signup/share", headers=merchant, data={"keyword": ""}).get_data(as_text=True)
    db.expire_all()
    assert db.get(Shop, shop.id).share_keyword is None and "<svg" not in html
    assert client.get("/j/acme-store").status_code == 404


@pytest.mark.parametrize("word, error", [
    ("NOPE", "NOPE is not one of your keywords. Create it on the Keywords page first."),
    ("OLD", "OLD is deactivated. Activate it on the Keywords page first."),
])
def test_bad_keyword_is_refused_beside_the_field_and_saves_nothing(client, db, merchant, shop, word, error):
    old = create_keyword(db(), shop, word="OLD")
    old.active = False
    db.commit()
    html = client.post("/settings/signup/share", headers=merchant, data={"keyword": word}).get_data(as_text=True)
    assert 'id="share-keyword-error"' in html and error in html
    db.expire_all()
    assert db.get(Shop, shop.id).share_keyword == "JOIN"


def test_another_shops_keyword_cannot_be_chosen(client, db, merchant, shop):
    other = make_shop("beta.myshopify.com")
    create_keyword(db(), other, word="BETA")
    html = client.post("/settings/signup/share", headers=merchant, data={"keyword": "BETA"}).get_data(as_text=True)
    assert "BETA is not one of your keywords" in html
    db.expire_all()
    assert db.get(Shop, shop.id).share_keyword == "JOIN"


def test_card_warns_when_the_keyword_stopped_working(client, db, merchant, shop):
    db.scalar(select(Keyword).where(Keyword.word == "JOIN")).active = False
    db.commit()
    html = client.get("/settings/signup/share", headers=merchant).get_data(as_text=True)
    assert "The link is not working" in html and "Its keyword JOIN was deleted or deactivated" in html


def test_full_navigation_to_a_card_goes_to_the_settings_page(client, shop, token_for):
    response = client.get(f"/settings/signup/share?id_token={token_for(shop.domain)}")
    assert response.status_code == 302 and response.headers["Location"].endswith("/settings/")
