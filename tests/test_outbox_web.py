"""The demo's Outbox page (kinnekt/web/outbox.py): "Text the store" hands a typed text to the inbound code Vonage's
/sms/inbound uses (a keyword sign-up, Y, STOP), refuses mistakes without storing anything, polls for the store's
answer, shows one number's messages, and makes links in messages clickable."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import InboundMessage, Keyword, OutboxMessage, Subscriber
from kinnekt.web.outbox import message_parts

STORE = "+18885550199"
PHONE = "+12125550187"
REPLY = "Alpha: Welcome! Here's 10% off with WELCOME10. Reply STOP to cancel."


@pytest.fixture
def demo_shop(app, monkeypatch, shop):
    """The test shop as the demo's: demo mode, a demo shop with its own number and double opt-in, a JOIN keyword."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    shop.is_demo, shop.sender, shop.double_opt_in = True, STORE, True
    Session.add(Keyword(shop_id=shop.id, word="JOIN", reply_text=REPLY, active=True))
    Session.commit()
    return shop


def _text(client, auth, text, phone=PHONE):
    response = client.post("/outbox/text", data={"phone": phone, "text": text}, headers=auth)
    return response, response.get_data(as_text=True)


def _settle(app):
    assert app.extensions["kinnekt_queue"].drain(20)
    Session.remove()


def _outbox(shop_id, phone=PHONE) -> list[str]:
    return Session.scalars(select(OutboxMessage.text).where(OutboxMessage.shop_id == shop_id,
                                                            OutboxMessage.to_phone == phone)
                           .order_by(OutboxMessage.id)).all()


def _subscriber(shop_id, phone=PHONE) -> Subscriber | None:
    return Session.scalar(select(Subscriber).where(Subscriber.shop_id == shop_id, Subscriber.phone == phone))


def test_a_keyword_y_and_stop_typed_in_the_demo_go_where_a_phone_text_goes(app, client, auth, demo_shop):
    response, html = _text(client, auth, "join")
    assert response.status_code == 200 and html.lstrip().startswith('<section id="outbox-page"')
    assert "Texted “join” from +12125550187" in html
    assert response.headers["HX-Push-Url"] == "/outbox/?phone=%2B12125550187"
    stored = Session.scalar(select(InboundMessage).where(InboundMessage.shop_id == demo_shop.id))
    assert (stored.from_phone, stored.to_number, stored.text) == (PHONE, STORE, "join")
    assert stored.provider_id.startswith("demo-")
    # The table shows this number's messages and polls until the store has answered.
    assert "Messages to +12125550187" in html
    assert f'hx-get="/outbox/table?waiting={stored.id}&amp;phone=%2B12125550187"' in html

    _settle(app)
    sub = _subscriber(demo_shop.id)
    assert (sub.status, sub.source, sub.keyword) == ("pending", "keyword", "JOIN")  # double opt-in
    assert len(_outbox(demo_shop.id)) == 1 and "Reply Y" in _outbox(demo_shop.id)[0]

    _text(client, auth, "Y")
    _settle(app)
    assert _subscriber(demo_shop.id).status == "subscribed"
    assert _outbox(demo_shop.id)[-1] == REPLY

    _text(client, auth, "STOP")
    assert _subscriber(demo_shop.id).status == "unsubscribed"  # in force when the form answers, as for Vonage
    _settle(app)
    assert "You are unsubscribed" in _outbox(demo_shop.id)[-1]
    assert Session.scalar(select(func.count()).select_from(InboundMessage)) == 3


def test_the_table_polls_until_the_answer_is_sent_then_stops_with_286(app, client, auth, demo_shop):
    _text(client, auth, "JOIN")
    inbound_id = Session.scalar(select(InboundMessage.id))
    _settle(app)
    response = client.get(f"/outbox/table?waiting={inbound_id}&phone=%2B12125550187", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 286 and 'id="outbox-table"' in html and "hx-trigger" not in html
    assert "Reply Y" in html

    unanswered = InboundMessage(shop_id=demo_shop.id, provider_id="waiting-1", from_phone=PHONE, to_number=STORE,
                                text="hello?")
    Session.add(unanswered)
    Session.commit()
    response = client.get(f"/outbox/table?waiting={unanswered.id}", headers=auth)
    assert response.status_code == 200 and 'hx-trigger="every 1s"' in response.get_data(as_text=True)


def test_another_shops_text_is_never_waited_on(app, client, auth, demo_shop, other_shop):
    theirs = InboundMessage(shop_id=other_shop.id, provider_id="theirs-1", from_phone=PHONE, to_number=STORE,
                            text="JOIN")
    Session.add(theirs)
    Session.commit()
    response = client.get(f"/outbox/table?waiting={theirs.id}", headers=auth)
    assert response.status_code == 286 and "hx-trigger" not in response.get_data(as_text=True)


@pytest.mark.parametrize("phone, text, field, message", [
    ("", "JOIN", "phone", "Enter the phone number the text comes from."),
    ("12", "JOIN", "phone", None),
    ("not a number", "JOIN", "phone", None),
    (PHONE, "   ", "text", "Type the text to send, for example a keyword."),
    (PHONE, "x" * 1601, "text", "A text can have at most 1,600 characters."),
])
def test_a_mistake_is_shown_beside_its_field_and_nothing_is_stored(app, client, auth, demo_shop, phone, text, field,
                                                                    message):
    response, html = _text(client, auth, text, phone=phone)
    assert response.status_code == 200
    error = re.search(rf'id="outbox-text-{"phone" if field == "phone" else "body"}-error">.*?<span>(.*?)</span>',
                      html, re.S)
    assert error, html
    if message:
        assert error.group(1) == message
    assert Session.scalar(select(func.count()).select_from(InboundMessage)) == 0
    assert Session.scalar(select(func.count()).select_from(Subscriber)) == 0
    _settle(app)
    assert _outbox(demo_shop.id, phone=PHONE) == []


def test_a_national_number_is_read_in_the_stores_country(app, client, auth, demo_shop):
    _text(client, auth, "JOIN", phone="(212) 555-0187")
    assert Session.scalar(select(InboundMessage.from_phone)) == PHONE


def test_there_is_no_text_form_outside_the_demo(client, auth, shop):
    assert client.post("/outbox/text", data={"phone": PHONE, "text": "JOIN"}, headers=auth).status_code == 404
    assert client.get("/outbox/table", headers=auth).status_code == 404
    assert Session.scalar(select(func.count()).select_from(InboundMessage)) == 0


def test_the_page_shows_one_numbers_messages_and_makes_links_clickable(client, auth, demo_shop):
    Session.add_all([
        OutboxMessage(shop_id=demo_shop.id, to_phone=PHONE, text="Sale: https://kinnekt.test/r/abc123. Hurry!"),
        OutboxMessage(shop_id=demo_shop.id, to_phone="+12125550100", text="For someone else")])
    Session.commit()
    html = client.get("/outbox/?phone=%2B12125550187", headers=auth).get_data(as_text=True)
    assert "For someone else" not in html and "Messages to +12125550187" in html
    assert ('Sale: <a href="https://kinnekt.test/r/abc123" target="_blank" rel="noopener noreferrer">'
            'https://kinnekt.test/r/abc123</a>. Hurry!') in html
    everyone = client.get("/outbox/?phone=nonsense", headers=auth).get_data(as_text=True)
    assert "For someone else" in everyone and "Messages to" not in everyone


def test_message_parts_split_text_and_links():
    assert message_parts("a http://x.test/1 b https://y.test/2") == [
        ("text", "a "), ("link", "http://x.test/1"), ("text", " b "), ("link", "https://y.test/2")]
    assert message_parts("no links") == [("text", "no links")]
    assert message_parts("") == []
