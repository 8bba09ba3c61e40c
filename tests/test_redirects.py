"""Public `GET /r/<code>`: a click is recorded and redirected with UTM parameters; an unknown code is a 404 page."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import func, select

from kinnekt.campaigns import links
from kinnekt.models import Click, Link, Subscriber
from tests.conftest import make_shop
from tests.factories import message
from tests.test_campaign_links import campaign, recipient

PHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"


@pytest.fixture
def changed(monkeypatch):
    """Calls to the segment engine's `subscribers_changed`, recorded instead of queued."""
    calls = []
    monkeypatch.setattr("kinnekt.segments.membership.subscribers_changed",
                        lambda shop_id, ids: calls.append((shop_id, sorted(ids))))
    return calls


def short_link(db, shop, url, *, name="Spring Sale - VIP"):
    """A campaign message to a new subscriber whose text holds `url`; returns (link, subscriber, campaign)."""
    camp = campaign(db, shop, name=name, body=f"Sale {url}")
    sub = recipient(db, shop)
    msg = message(db, camp, sub)
    links.rewrite(db, shop, msg, f"Sale {url}")
    db.commit()
    return db.scalar(select(Link).where(Link.message_id == msg.id)), sub, camp


def test_a_click_is_recorded_and_redirected_with_utm_parameters(db, shop, client, changed):
    link, sub, camp = short_link(db, shop, "https://alpha.example/products/hat?color=red&size=m#reviews")
    response = client.get(f"/r/{link.code}", headers={"User-Agent": PHONE_UA})
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert (target.scheme, target.netloc, target.path, target.fragment) == (
        "https", "alpha.example", "/products/hat", "reviews")
    assert parse_qsl(target.query) == [("color", "red"), ("size", "m"), ("utm_source", "sms"),
                                       ("utm_medium", "kinnekt"), ("utm_campaign", "spring-sale-vip"),
                                       ("kn", link.code)]
    assert response.headers["Cache-Control"] == "no-store"

    db.expire_all()
    click = db.scalar(select(Click))
    assert (click.shop_id, click.link_id, click.campaign_id, click.subscriber_id, click.user_agent) == (
        shop.id, link.id, camp.id, sub.id, PHONE_UA)
    fresh = db.get(Subscriber, sub.id)
    assert fresh.clicks_count == 1 and fresh.last_clicked_at == click.at
    assert changed == [(shop.id, [sub.id])]

    client.get(f"/r/{link.code}", headers={"User-Agent": PHONE_UA})
    db.expire_all()
    assert db.get(Subscriber, sub.id).clicks_count == 2
    assert db.scalar(select(func.count()).select_from(Click)) == 2


def test_our_utm_parameters_replace_the_targets_own_and_the_raw_query_is_kept(db, shop, client, changed):
    link, _sub, _camp = short_link(db, shop, "https://alpha.example/?q=a+b%20c&utm_source=ig&kn=old&empty=")
    response = client.get(f"/r/{link.code}")
    query = urlsplit(response.headers["Location"]).query
    assert query == f"q=a+b%20c&empty=&utm_source=sms&utm_medium=kinnekt&utm_campaign=spring-sale-vip&kn={link.code}"


def test_a_target_without_a_path_gets_one(db, shop, client, changed):
    link, _sub, _camp = short_link(db, shop, "https://alpha.example")
    location = client.get(f"/r/{link.code}").headers["Location"]
    assert location.startswith("https://alpha.example/?utm_source=sms&")


def test_link_previews_are_redirected_but_not_counted(db, shop, client, changed):
    link, sub, _camp = short_link(db, shop, "https://alpha.example/sale")
    for agent in ("facebookexternalhit/1.1 Facebot Twitterbot/1.0", "Slackbot-LinkExpanding 1.0",
                  "WhatsApp/2.23.20.0 A", "TelegramBot (like TwitterBot)"):
        response = client.get(f"/r/{link.code}", headers={"User-Agent": agent})
        assert response.status_code == 302
    assert client.head(f"/r/{link.code}", headers={"User-Agent": PHONE_UA}).status_code == 302
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Click)) == 0
    assert db.get(Subscriber, sub.id).clicks_count == 0
    assert changed == []


@pytest.mark.parametrize("code", ["NoSuch01", "bad-code!", "x" * 40])
def test_an_unknown_code_is_a_friendly_404_page(db, shop, client, changed, code):
    response = client.get(f"/r/{code}")
    assert response.status_code == 404
    assert "This link doesn&#39;t work" in response.text or "This link doesn't work" in response.text
    assert 'id="link-not-found"' in response.text
    assert db.scalar(select(func.count()).select_from(Click)) == 0


def test_a_stored_non_http_target_is_never_followed(db, shop, client, changed):
    link, _sub, _camp = short_link(db, shop, "https://alpha.example/sale")
    link.url = "javascript:alert(1)"  # cannot come from rewrite; a tampered row still does not redirect
    db.commit()
    assert client.get(f"/r/{link.code}").status_code == 404


def test_codes_are_global_and_a_click_belongs_to_the_links_shop(db, shop, client, changed):
    other = make_shop("beta.myshopify.com")
    link, sub, camp = short_link(db, other, "https://beta.example/x", name="Beta drop")
    response = client.get(f"/r/{link.code}", headers={"User-Agent": PHONE_UA})
    assert "utm_campaign=beta-drop" in response.headers["Location"]
    db.expire_all()
    click = db.scalar(select(Click))
    assert (click.shop_id, click.campaign_id, click.subscriber_id) == (other.id, camp.id, sub.id)
    assert changed == [(other.id, [sub.id])]


def test_a_test_message_link_redirects_without_touching_any_subscriber(db, shop, client, changed):
    from kinnekt.models import Message
    msg = Message(shop_id=shop.id, kind="test", to_phone="+12125550000", status="pending")
    db.add(msg)
    db.commit()
    text = links.rewrite(db, shop, msg, "https://alpha.example/t")
    db.commit()
    code = text.rsplit("/", 1)[1]
    response = client.get(f"/r/{code}", headers={"User-Agent": PHONE_UA})
    assert "utm_campaign=test-message" in response.headers["Location"]
    assert db.scalar(select(Click.campaign_id)) is None
    assert changed == []


def test_the_redirect_is_public_and_the_segment_recheck_is_queued_for_real(app, db, shop, client):
    link, sub, _camp = short_link(db, shop, "https://alpha.example/sale")
    response = client.get(f"/r/{link.code}")  # no session token
    assert response.status_code == 302
    assert app.extensions["kinnekt_queue"].drain(60)
