"""The segment page through the Flask test client: what it shows for rule, auto and list segments, the log partial,
the session token, shop scoping and bad query arguments (a clear 400, never a 500), on both databases."""
from __future__ import annotations

import datetime as dt
import html as html_module
import json
import re

import pytest

from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign, CampaignSegment, Flow, SegmentEvent, StaticList
from kinnekt.segments import membership
from tests.factories import add, rule, where
from tests.test_segments_web import EXAMPLE, person, segment

pytestmark = pytest.mark.usefixtures("finished_jobs")


def text(response) -> str:
    return html_module.unescape(response.get_data(as_text=True))


@pytest.fixture
def store(shop, other_shop):
    """A built rule segment with Ada and Bob in it and 60 log entries; another shop's segment."""
    ada = person(shop, "+12125550101", name="Ada", spent="120.00", orders=3, last_order_days=3)
    bob = person(shop, "+12125550102", name="Bob", spent="40.00", orders=1, last_order_days=10)
    seg = segment(shop, EXAMPLE, "Recent spenders")
    membership.build(Session(), seg.id, now=utcnow())
    now = utcnow()
    add(*[SegmentEvent(shop_id=shop.id, segment_id=seg.id, subscriber_id=(ada if i % 2 else bob).id,
                       kind="leave" if i % 2 else "enter", at=now - dt.timedelta(hours=i), cause="sweep")
          for i in range(1, 61)])
    theirs = segment(other_shop, EXAMPLE, "Their segment")
    return {"segment": seg, "ada": ada, "bob": bob, "theirs": theirs}


def test_the_page_shows_rules_in_words_count_chart_log_members_exports_and_users(client, auth, shop, store):
    seg = store["segment"]
    campaign = add(Campaign(shop_id=shop.id, name="Spring sale", status="draft"))
    add(CampaignSegment(shop_id=shop.id, campaign_id=campaign.id, segment_id=seg.id, mode="include"))
    flow = add(Flow(shop_id=shop.id, name="Thank spenders", trigger="segment_enter", trigger_config={},
                    segment_id=seg.id, exit_conditions=[]))
    response = client.get(f"/segments/{seg.id}", headers=auth)
    assert response.status_code == 200
    page = text(response)
    assert 'id="segment-page"' in page and "<h1 class=\"page-header__title\">Recent spenders</h1>" in page
    assert "Last order was in the last 30 days" in page and "Money spent is greater than $25.00" in page
    assert "All of these are true:" in page and ">AND<" in page
    assert re.search(r'id="segment-member-count".*?<p class="metric__value">2</p>', page, re.S)
    chart = json.loads(re.search(r'<script type="application/json" id="segment-chart-data">(.*?)</script>',
                                 page, re.S).group(1))
    assert chart["counts"] == [2] and chart["timezone"] == "America/New_York" and len(chart["t"]) == 1
    assert f'href="/segments/{seg.id}/edit"' in page
    assert f'href="/segments/{seg.id}/members.csv"' in page and f'/segments/{seg.id}/audiences/' in page
    assert f'href="/campaigns/{campaign.id}"' in page and "Sends to it" in page
    assert f'href="/flows/{flow.id}"' in page and "Flow “Thank spenders”" in page and "When someone enters" in page
    # The newest members link to their subscriber pages; the log's first page holds 25 of 62 changes.
    sample = page[page.index('id="segment-sample"'):]
    assert f'href="/subscribers/{store["ada"].id}"' in sample and f'href="/subscribers/{store["bob"].id}"' in sample
    log = page[page.index('id="segment-log"'):page.index('id="segment-sample"')]
    assert log.count("<tr>") == 26 and "1–25 of 62 changes" in log and "Page 1 of 3" in log
    assert "Dates moved on" in log and "Segment counted" not in log  # the build's entries are the oldest


def test_the_log_partial_pages_and_filters_alone(client, auth, store):
    seg = store["segment"]
    headers = {**auth, "HX-Target": "segment-log"}
    response = client.get(f"/segments/{seg.id}/log?page=3", headers=headers)
    body = text(response)
    assert response.status_code == 200 and body.lstrip().startswith('<div id="segment-log"')
    assert "page-header" not in body and "51–62 of 62 changes" in body and body.count("<tr>") == 13
    assert f'href="/segments/{seg.id}/log?page=2"' in body and "Segment counted" in body
    left = text(client.get(f"/segments/{seg.id}/log?kind=leave&q=ada", headers=headers))
    assert "1–25 of 30 changes" in left and "Entered" not in left.split("</thead>")[1]
    assert f'href="/segments/{seg.id}/log?kind=leave&q=ada&page=2"' in left  # the next page keeps the filters
    none = text(client.get(f"/segments/{seg.id}/log?q=nobody", headers=headers))
    assert "No changes match" in none
    # The same URL without htmx (a reload of a pushed URL) is the whole page, showing that page of the log.
    full = text(client.get(f"/segments/{seg.id}/log?page=2&kind=enter",
                           headers={"Authorization": auth["Authorization"]}))
    assert full.startswith("<!doctype html>") and 'id="segment-page"' in full
    assert "26–32 of 32 changes" in full and 'value="enter" selected' in full


def test_auto_and_list_segments_have_a_page_without_edit(client, auth, shop):
    person(shop, "+12125550101", name="Ada")
    auto = segment(shop, where(rule("subscription_source", "eq", "all")), "All subscribers", kind="auto",
                   auto_source="all")
    vip = add(StaticList(shop_id=shop.id, name="VIP phones"))
    listed = segment(shop, where(rule("list", "in", vip.id)), "On the VIP list")
    page = text(client.get(f"/segments/{auto.id}", headers=auth))
    assert "Subscription source is Any source" in page and "Automatic segment" in page
    assert f"/segments/{auto.id}/edit" not in page
    assert "No counts yet" in page and "No changes yet" in page and "No members yet" in page
    page = text(client.get(f"/segments/{listed.id}", headers=auth))
    assert '<a class="segment-words__rule" href="/segments/lists/">Is on list “VIP phones”</a>' in page
    assert f'href="/segments/{listed.id}/edit"' in page
    nested = segment(shop, where(rule("segment", "not_in", listed.id)), "Not on the VIP list")
    page = text(client.get(f"/segments/{nested.id}", headers=auth))
    assert (f'<a class="segment-words__rule" href="/segments/{listed.id}">Is not in segment “On the VIP list”</a>'
            in page)


def test_the_list_links_each_name_to_its_page(client, auth, store):
    seg = store["segment"]
    page = text(client.get("/segments/", headers=auth))
    assert f'<a href="/segments/{seg.id}">Recent spenders</a>' in page


def test_another_shops_segment_is_not_found(client, auth, store):
    theirs = store["theirs"]
    for url in (f"/segments/{theirs.id}", f"/segments/{theirs.id}/log", f"/segments/{theirs.id}/log?page=2",
                "/segments/999999999", "/segments/99999999999999999999999/log"):
        response = client.get(url, headers=auth)
        assert response.status_code == 404, url
        assert "Their segment" not in text(response)


def test_without_a_valid_session_token_nothing_is_shown(app, client, shop, store):
    from kinnekt.shopify import session_token
    seg = store["segment"]
    forged = session_token.mint(shop.domain, app.config["SHOPIFY_API_KEY"], "not-the-app-secret-0123456789abcdef")
    for url in (f"/segments/{seg.id}", f"/segments/{seg.id}/log?page=2"):
        assert client.get(url, headers={"HX-Request": "true"}).status_code == 401
        response = client.get(url, headers={"HX-Request": "true", "Authorization": f"Bearer {forged}"})
        assert response.status_code == 401 and "Recent spenders" not in text(response)
        # A document request without a token goes to the bounce page for a fresh one, never to the data.
        bounce = client.get(url, headers={"Accept": "text/html"})
        assert bounce.status_code == 302 and "/auth/session-token-bounce" in bounce.headers["Location"]


@pytest.mark.parametrize("query, message", [
    ("kind=joined", "Show “All changes”, “Entered” or “Left”"),
    ("kind=enter%20", "Show “All changes”, “Entered” or “Left”"),
    ("page=abc", "“abc” is not a page number"),
    ("page=0", "“0” is not a page number"),
    ("page=-2", "“-2” is not a page number"),
    ("page=1.5", "“1.5” is not a page number"),
    ("page=99999999999999999999999999", "is not a page number"),
    ("page=%EF%BC%92", "is not a page number"),  # a full-width digit: isdigit(), not a page
    ("q=" + "x" * 101, "Search for at most 100 characters"),
])
def test_bad_query_arguments_get_a_clear_error(client, auth, store, query, message):
    seg = store["segment"]
    for url in (f"/segments/{seg.id}/log?{query}", f"/segments/{seg.id}?{query}"):
        response = client.get(url, headers={**auth, "HX-Target": "segment-log"})
        assert response.status_code == 400, url
        assert message in text(response)


def test_a_page_past_the_end_shows_the_last_page(client, auth, store):
    seg = store["segment"]
    body = text(client.get(f"/segments/{seg.id}/log?page=40", headers={**auth, "HX-Target": "segment-log"}))
    assert "51–62 of 62 changes" in body


def test_a_nul_character_in_the_search_is_refused(client, auth, store):
    response = client.get(f"/segments/{store['segment'].id}/log?q=a%00b", headers=auth)
    assert response.status_code == 400
