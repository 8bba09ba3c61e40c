"""Keywords pages: add, edit, turn on/off and delete through the pages (errors beside the field, nothing saved),
the keyword's segment and its members, the delete confirmation naming what uses the segment, tenant isolation."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Campaign, CampaignSegment, Keyword, Segment, Subscriber
from kinnekt.subscribers import keywords as kw
from kinnekt.subscribers import optin
from kinnekt.tenancy import bind_shop
from tests.helpers import drain

pytestmark = pytest.mark.usefixtures("settled_jobs")


def count(model, **where) -> int:
    """Rows in the whole database (not only the shop a request bound the shared session to)."""
    bind_shop(None)
    Session.expire_all()
    statement = select(func.count()).select_from(model)
    for name, value in where.items():
        statement = statement.where(getattr(model, name) == value)
    return Session.scalar(statement)


def segment_of(keyword_id: int) -> Segment | None:
    bind_shop(None)
    Session.expire_all()
    return Session.scalar(select(Segment).where(Segment.keyword_id == keyword_id))


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def field_error(html: str, field_id: str) -> str:
    return html.split(f'id="{field_id}-error"', 1)[1].split("</p>", 1)[0]


# --- add --------------------------------------------------------------------------------------------------

def test_new_keyword_form(client, auth, shop):
    html = client.get("/keywords/new", headers=auth).get_data(as_text=True)
    assert 'id="keyword-form"' in html and 'hx-post="/keywords/"' in html
    assert 'name="word"' in html and 'name="reply_text"' in html and 'name="active" value="on" checked' in html


def test_add_a_keyword_through_the_page(client, auth, shop, other_shop):
    response = client.post("/keywords/", headers=auth,
                           data={"word": "  sale10 ", "reply_text": " Here is 10% off: SALE10 ", "active": "on"})
    assert response.status_code == 200
    assert json.loads(response.headers["HX-Location"])["path"] == "/keywords/"
    assert toast(response) == {"message": "Added the keyword SALE10", "isError": False}
    keyword = Session.scalars(select(Keyword)).one()
    assert (keyword.shop_id, keyword.word, keyword.reply_text, keyword.active) == (
        shop.id, "SALE10", "Here is 10% off: SALE10", True)
    assert segment_of(keyword.id).name == "Keyword: SALE10"
    drain()
    html = client.get("/keywords/", headers=auth).get_data(as_text=True)
    row = html.split(">SALE10<", 1)[1].split("</tr>", 1)[0]
    assert f'href="/keywords/{keyword.id}#keyword-segment">Keyword: SALE10</a>' in row
    assert "0 members" in row and '<td class="numeric">0</td>' in row


def test_an_inactive_keyword_can_be_added(client, auth, shop):
    client.post("/keywords/", headers=auth, data={"word": "LATER", "reply_text": ""})  # box unchecked
    assert Session.scalars(select(Keyword)).one().active is False


@pytest.mark.parametrize("data, field, message", [
    ({"word": "", "reply_text": "hi"}, "keyword-word", "Enter a keyword."),
    ({"word": "SALE NOW", "reply_text": "hi"}, "keyword-word", "2 to 20 letters or digits"),
    ({"word": "a", "reply_text": "hi"}, "keyword-word", "2 to 20 letters or digits"),
    ({"word": "stop", "reply_text": "hi"}, "keyword-word", "STOP is reserved"),
    ({"word": "Help", "reply_text": "hi"}, "keyword-word", "HELP is reserved"),
    ({"word": "SALE", "reply_text": "x" * (kw.MAX_REPLY_LENGTH + 1)}, "keyword-reply", "keep it to"),
])
def test_a_bad_keyword_shows_the_error_beside_its_field_and_saves_nothing(client, auth, shop, data, field, message):
    response = client.post("/keywords/", headers=auth, data={**data, "active": "on"})
    assert response.status_code == 200 and "HX-Location" not in response.headers
    html = response.get_data(as_text=True)
    assert html.startswith('\n<form class="card" id="keyword-form"') or html.lstrip().startswith(
        '<form class="card" id="keyword-form"')
    assert message in field_error(html, field)
    assert f'value="{data["word"]}"' in html  # what was typed stays
    assert count(Keyword) == 0 and count(Segment) == 0


def test_a_word_the_shop_already_has_is_refused_but_another_shop_may_have_it(client, auth, shop, other_shop):
    kw.create_keyword(Session(), other_shop, word="SALE")
    assert client.post("/keywords/", headers=auth, data={"word": "SALE"}).headers.get("HX-Location")
    html = client.post("/keywords/", headers=auth, data={"word": "sale"}).get_data(as_text=True)
    assert "You already have the keyword SALE." in field_error(html, "keyword-word")
    assert count(Keyword, shop_id=shop.id) == 1 and count(Segment, shop_id=shop.id) == 1
    assert count(Keyword, shop_id=other_shop.id) == 1


# --- edit ---------------------------------------------------------------------------------------------------

def test_edit_page_shows_the_form_and_the_segment_members(client, auth, shop):
    shop.double_opt_in = False
    Session.commit()
    keyword = kw.create_keyword(Session(), shop, word="JOIN", reply_text="Welcome")
    optin.subscribe(Session(), shop, "+447400123456", source="keyword", keyword=keyword, consent_text="Texted JOIN")
    optin.subscribe(Session(), shop, "+447400123457", source="manual", consent_text="Added")
    drain()
    html = client.get(f"/keywords/{keyword.id}", headers={"Authorization": auth["Authorization"]}
                      ).get_data(as_text=True)
    assert 'id="keyword-page"' in html and "<html" in html
    assert 'id="keyword-word" name="word" type="text" value="JOIN"' in html and "readonly" in html
    assert ">Welcome</textarea>" in html
    members = html.split('id="keyword-segment"', 1)[1]
    assert "Keyword: JOIN" in members and "1 member:" in members
    assert "+447400123456" in members and "+447400123457" not in members


def test_update_reply_and_active(client, auth, shop):
    keyword = kw.create_keyword(Session(), shop, word="JOIN", reply_text="old")
    response = client.post(f"/keywords/{keyword.id}", headers=auth,
                           data={"word": "JOIN", "reply_text": "  new reply "})  # active unchecked
    assert json.loads(response.headers["HX-Location"])["path"] == "/keywords/"
    Session.expire_all()
    saved = Session.get(Keyword, keyword.id)
    assert (saved.word, saved.reply_text, saved.active) == ("JOIN", "new reply", False)


def test_update_ignores_a_posted_word_and_refuses_a_long_reply(client, auth, shop):
    keyword = kw.create_keyword(Session(), shop, word="JOIN", reply_text="old")
    client.post(f"/keywords/{keyword.id}", headers=auth, data={"word": "OTHER", "reply_text": "ok", "active": "on"})
    Session.expire_all()
    assert Session.get(Keyword, keyword.id).word == "JOIN"
    response = client.post(f"/keywords/{keyword.id}", headers=auth,
                           data={"reply_text": "x" * (kw.MAX_REPLY_LENGTH + 1)})
    assert "HX-Location" not in response.headers
    assert "keep it to" in field_error(response.get_data(as_text=True), "keyword-reply")
    Session.expire_all()
    saved = Session.get(Keyword, keyword.id)
    assert (saved.reply_text, saved.active) == ("ok", True)  # the unchecked box was not saved either


def test_turn_off_and_on_from_the_list(client, auth, shop):
    keyword = kw.create_keyword(Session(), shop, word="JOIN")
    response = client.post(f"/keywords/{keyword.id}/active", headers=auth, data={"active": "off"})
    html = response.get_data(as_text=True)
    assert 'id="keywords-page"' in html and '<span class="badge">Inactive</span>' in html
    assert "JOIN is off" in toast(response)["message"]
    assert count(Keyword, active=False) == 1
    html = client.post(f"/keywords/{keyword.id}/active", headers=auth, data={"active": "on"}).get_data(as_text=True)
    assert '<span class="badge badge--success">Active</span>' in html and count(Keyword, active=True) == 1


# --- delete ------------------------------------------------------------------------------------------------

def _used_by_campaign(shop, keyword, name="Spring sale"):
    campaign = Campaign(shop_id=shop.id, name=name, body="Hi", status="scheduled")
    Session.add(campaign)
    Session.flush()
    Session.add(CampaignSegment(shop_id=shop.id, campaign_id=campaign.id, segment_id=segment_of(keyword.id).id))
    Session.commit()


def test_delete_an_unused_keyword_after_the_confirmation(client, auth, shop):
    keyword = kw.create_keyword(Session(), shop, word="JOIN")
    html = client.get(f"/keywords/{keyword.id}/delete", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<div id="keyword-dialog">')
    assert "Nothing else uses that segment" in html and "Delete keyword" in html
    assert count(Keyword) == 1  # asking deletes nothing
    response = client.delete(f"/keywords/{keyword.id}", headers=auth, data={"confirmed": ""})
    assert 'id="keywords-page"' in response.get_data(as_text=True)
    assert "Deleted the keyword JOIN" in toast(response)["message"]
    assert count(Keyword) == 0 and count(Segment) == 0


def test_delete_of_a_keyword_whose_segment_a_campaign_uses_names_it_and_needs_confirming(client, auth, shop):
    shop.double_opt_in = False
    Session.commit()
    keyword = kw.create_keyword(Session(), shop, word="JOIN")
    subscriber = optin.subscribe(Session(), shop, "+447400123456", source="keyword", keyword=keyword,
                                 consent_text="Texted JOIN")
    _used_by_campaign(shop, keyword)
    html = client.get(f"/keywords/{keyword.id}/delete", headers=auth).get_data(as_text=True)
    usages = html.split('id="keyword-usages"', 1)[1].split("</ul>", 1)[0]
    assert "Campaign “Spring sale” (Scheduled)" in usages
    assert 'hx-vals="{&#34;confirmed&#34;: &#34;yes&#34;}"' in html

    # A delete sent without that confirmation (the usage appeared after the dialog opened) deletes nothing.
    response = client.delete(f"/keywords/{keyword.id}", headers=auth, data={"confirmed": ""})
    assert response.headers["HX-Retarget"] == "#keyword-dialog" and toast(response)["isError"] is True
    assert "Campaign “Spring sale” (Scheduled)" in response.get_data(as_text=True)
    assert count(Keyword) == 1 and count(Segment) == 1

    response = client.delete(f"/keywords/{keyword.id}", headers=auth, data={"confirmed": "yes"})
    assert "Deleted the keyword JOIN" in toast(response)["message"]
    assert count(Keyword) == 0 and count(Segment) == 0 and count(CampaignSegment) == 0
    Session.expire_all()
    kept = Session.get(Subscriber, subscriber.id)
    assert (kept.status, kept.keyword) == ("subscribed", "JOIN")


# --- tenancy -----------------------------------------------------------------------------------------------

def test_another_shops_keyword_is_a_404_everywhere_and_stays_as_it_was(client, auth, shop, other_shop):
    theirs = kw.create_keyword(Session(), other_shop, word="SECRET", reply_text="Theirs")
    requests = [
        ("get", f"/keywords/{theirs.id}", {}),
        ("post", f"/keywords/{theirs.id}", {"reply_text": "hacked", "active": ""}),
        ("post", f"/keywords/{theirs.id}/active", {"active": "off"}),
        ("get", f"/keywords/{theirs.id}/delete", {}),
        ("delete", f"/keywords/{theirs.id}", {"confirmed": "yes"}),
        ("get", "/keywords/999999", {}),
    ]
    for method, url, data in requests:
        response = getattr(client, method)(url, headers=auth, data=data)
        assert response.status_code == 404, (method, url)
        assert "SECRET" not in response.get_data(as_text=True)
    Session.expire_all()
    kept = Session.get(Keyword, theirs.id)
    assert (kept.reply_text, kept.active) == ("Theirs", True) and segment_of(theirs.id) is not None
    assert "SECRET" not in client.get("/keywords/", headers=auth).get_data(as_text=True)


def test_keyword_pages_need_a_session_token(client, shop):
    assert client.post("/keywords/", data={"word": "SALE"}, headers={"HX-Request": "true"}).status_code == 401
    assert count(Keyword) == 0
