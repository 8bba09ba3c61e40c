"""The home page (kinnekt/web/home.py): the session token, the shop's own figures only, the period switch, money in
the shop's currency and times in its time zone, and the empty state of a new shop."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from kinnekt.db import Session, utcnow
from kinnekt.models import Subscriber
from kinnekt.shopify import session_token
from tests.conftest import make_shop
from tests.factories import message
from tests.test_campaign_links import campaign, recipient
from tests.test_dashboard import credit


@pytest.fixture
def page_headers(shop, token_for):
    """A full (non-htmx) request with a valid token: the whole page."""
    return {"Authorization": f"Bearer {token_for(shop.domain)}"}


def seed(db, shop, *, name, revenue, sent):
    """A campaign of `shop` that started yesterday, sent `sent` messages and earned `revenue`; a new subscriber."""
    now = utcnow()
    camp = campaign(db, shop, name=name, body="Sale https://shop.example/s", status="completed",
                    started_at=now - dt.timedelta(days=1))
    for _ in range(sent):
        message(db, camp, recipient(db, shop), status="delivered")
    credit(db, shop, camp, now - dt.timedelta(hours=20), revenue)
    db.add(Subscriber(shop_id=shop.id, phone=f"+1917555{camp.id:04d}", status="subscribed", source="keyword",
                      subscribed_at=now - dt.timedelta(hours=2)))
    db.commit()
    return camp


def test_home_refuses_a_missing_or_forged_token(app, client, shop):
    assert client.get("/", headers={"HX-Request": "true"}).status_code == 401
    forged = session_token.mint(shop.domain, app.config["SHOPIFY_API_KEY"], "not-the-app-secret-0123456789abcdef")
    response = client.get("/", headers={"HX-Request": "true", "Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and shop.domain not in response.get_data(as_text=True)
    # A document load without a token goes to the bounce page (App Bridge fetches one), not to the figures.
    response = client.get("/?shop=" + shop.domain, headers={"Accept": "text/html"})
    assert response.status_code == 302 and "/auth/session-token-bounce" in response.headers["Location"]


def test_home_shows_only_the_shops_own_figures(db, client, auth, shop, other_shop):
    seed(db, shop, name="Our spring sale", revenue="30.00", sent=3)
    theirs = seed(db, other_shop, name="Their secret sale", revenue="999.00", sent=7)
    Session.add(Subscriber(shop_id=other_shop.id, phone="+19175550999", status="subscribed", source="checkout",
                           subscribed_at=utcnow() - dt.timedelta(hours=1)))
    Session.commit()
    html = client.get("/", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="home-page"')
    assert "Our spring sale" in html and "$30.00" in html
    assert "Their secret sale" not in html and "999" not in html and f"/campaigns/{theirs.id}" not in html
    assert '"checkout"' not in html  # no checkout subscribers in our chart data: that one is theirs
    figures = re.search(r'id="home-subscribers">.*?metric__value">([^<]+)<', html, re.S).group(1)
    assert figures == "4"  # 3 recipients and 1 keyword subscriber, not the other shop's 9


def test_period_switch_swaps_the_partial_and_keeps_the_embedded_query(db, client, auth, shop):
    seed(db, shop, name="Ours", revenue="12.00", sent=1)
    html = client.get("/?days=7&shop=alpha.myshopify.com&host=YWRtaW4&id_token=secret",
                      headers=auth).get_data(as_text=True)
    assert 'data-period="7"' in html
    switch = re.findall(r'hx-get="([^"]+)"', html)
    assert len(switch) == 3 and all("shop=alpha.myshopify.com" in url and "host=YWRtaW4" in url for url in switch)
    assert not any("id_token" in url for url in switch)  # a one-time token is never copied into links
    assert 'aria-current="true">7 days' in html and 'hx-push-url="true">30 days' in html
    assert "Last 7 days" in html and "Last 30 days" not in html


@pytest.mark.parametrize("days", ["45", "abc", "-7", "1e3"])
def test_a_period_not_offered_is_a_clear_400(client, auth, page_headers, days):
    response = client.get(f"/?days={days}", headers=auth)
    assert response.status_code == 400
    assert "Choose a period of 7, 30 or 90 days." in response.get_data(as_text=True)
    response = client.get(f"/?days={days}", headers=page_headers)
    assert response.status_code == 400 and "Choose a period of 7, 30 or 90 days." in response.get_data(as_text=True)


def test_full_page_has_home_first_in_the_navigation(client, page_headers, db, shop):
    html = client.get("/", headers=page_headers).get_data(as_text=True)
    assert html.startswith("<!doctype html>") and 'id="home-page"' in html
    nav = html[html.index('id="app-nav"'):]  # the sidebar (the narrow screen's Menu button comes before it)
    labels = re.findall(r'<span class="icon icon--[a-z-]+" aria-hidden="true"></span>\s*<span>([^<]+)</span>', nav)
    assert labels[0] == "Home"
    current = re.search(r'href="([^"]+)"\s+aria-current="page"', html)
    assert current and current.group(1) == "/" and html.count('aria-current="page"') == 1
    assert "HX-Request" in client.get("/", headers=page_headers).headers["Vary"]


def test_money_in_the_shops_currency_and_times_in_its_zone(db, client, token_for):
    paris = make_shop("paris.myshopify.com", timezone="Europe/Paris", currency="EUR")
    seed(db, paris, name="Soldes", revenue="1234.50", sent=2)
    send_at = dt.datetime(2031, 7, 14, 8, 30, tzinfo=dt.timezone.utc)  # 10:30 in Paris (summer time)
    campaign(db, paris, name="Bastille Day", status="scheduled", send_at=send_at, started_at=None)
    html = client.get("/", headers={"Authorization": f"Bearer {token_for(paris.domain)}",
                                    "HX-Request": "true"}).get_data(as_text=True)
    assert "€1,234.50" in html and "$" not in html
    assert "Jul 14, 2031, 10:30 AM" in html and "Europe/Paris time" in html


def test_a_new_shop_gets_a_way_to_start_not_empty_charts(client, auth):
    html = client.get("/", headers=auth).get_data(as_text=True)
    assert "Start collecting subscribers" in html and 'id="home-empty"' in html
    assert "data-dashboard-chart" not in html and "period-switch" not in html
    assert 'href="/keywords/"' in html


def test_a_shop_with_subscribers_and_no_activity_in_the_period_says_so(db, client, auth, shop):
    Session.add(Subscriber(shop_id=shop.id, phone="+19175550123", status="subscribed", source="import",
                           subscribed_at=utcnow() - dt.timedelta(days=200)))
    Session.commit()
    html = client.get("/?days=7", headers=auth).get_data(as_text=True)
    assert 'id="home-growth-empty"' in html and "data-dashboard-chart" not in html
    assert "No campaign has been sent yet." in html and "Nothing scheduled." in html
    assert re.search(r'id="home-revenue">.*?metric__value">\$0\.00<', html, re.S)


def test_the_page_answers_in_a_bounded_number_of_queries(db, client, auth, shop):
    """The figures take a fixed number of queries, plus two per campaign started in the period (its opt-outs, by
    stats.unsubscribes), whatever the number of subscribers, messages and orders."""
    from sqlalchemy import event

    from kinnekt import db as kdb

    def statements() -> int:
        seen = []
        engine = kdb.engine()
        listener = lambda *_args: seen.append(1)  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert client.get("/?days=30", headers=auth).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(seen)

    seed(db, shop, name="Campaign 0", revenue="5.00", sent=2)
    one = statements()
    for n in range(1, 4):
        seed(db, shop, name=f"Campaign {n}", revenue="5.00", sent=20)
    assert statements() == one + 2 * 3  # stats.unsubscribes: two queries per campaign
    assert one <= 20


def test_the_lifecycle_card_shows_the_stage_of_each_subscribed_number(db, client, auth, shop, other_shop):
    from kinnekt.models import Customer
    seed(db, shop, name="Spring", revenue="5.00", sent=1)  # two subscribers without a customer
    html = client.get("/", headers=auth).get_data(as_text=True)
    assert 'id="home-lifecycle-empty"' in html
    for n, stage in enumerate(["loyal", "loyal", "dormant", None]):
        person = Customer(shop_id=shop.id, shopify_id=100 + n, lifecycle_stage=stage)
        db.add(person)
        db.flush()
        db.add(Subscriber(shop_id=shop.id, phone=f"+1646555{n:04d}", status="subscribed", source="manual",
                          customer_id=person.id))
    theirs = Customer(shop_id=other_shop.id, shopify_id=999, lifecycle_stage="churned")
    db.add(theirs)
    db.flush()
    db.add(Subscriber(shop_id=other_shop.id, phone="+19175559999", status="subscribed", source="manual",
                      customer_id=theirs.id))
    db.commit()
    html = client.get("/", headers=auth).get_data(as_text=True)
    card = html.split('id="home-lifecycle"', 1)[1].split("</section>", 1)[0]

    def row(stage):
        cells = re.search(rf'id="home-lifecycle-{stage}">(.*?)</tr>', card, re.S).group(1)
        return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]

    assert row("loyal")[:3] == ["Loyal", "2", "33%"]  # of 6 subscribed numbers
    assert row("dormant")[:3] == ["Dormant", "1", "17%"]
    assert row("churned")[:3] == ["Churned", "0", "0%"]  # the other shop's churned customer is not ours
    assert row("none")[:2] == ["No orders yet", "3"]
    assert 'value="0.3333"' in card and "<meter" in card
