"""The mobile popup: markup through the app proxy, signing up (pending + confirmation), refusals, and its settings."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select, update

from kinnekt.db import Session, utcnow
from kinnekt.models import Message, SignupAttempt, Subscriber, SubscriptionEvent
from kinnekt.queue import get_queue
from kinnekt.subscribers import popup
from tests.conftest import make_shop
from tests.test_shopify_app_proxy import proxy_query

pytestmark = pytest.mark.usefixtures("settled_jobs")

ON = {"enabled": True, "headline": "Ten percent off", "body": "Texts from the bakery.", "button": "Join us"}


@pytest.fixture
def shop(db):
    """A demo shop (texts go to the Outbox) with the popup on."""
    shop = make_shop("alpha.myshopify.com", is_demo=True, popup_settings=dict(ON))
    shop.name = "Alpha Bakery"
    db.commit()
    return shop


@pytest.fixture
def signed(app):
    """The signed query Shopify's proxy appends for a shop."""
    return lambda domain="alpha.myshopify.com", **kw: proxy_query(domain, app.config["SHOPIFY_API_SECRET"], **kw)


def sign_up(client, query, **form):
    data = {"phone": "+1 650 253 0000", "consent": "1", **form}
    return client.post(f"/proxy/popup?{query}", data=data, headers={"X-Forwarded-For": "203.0.113.9"})


def count(db, model) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model))


def nothing_stored(db):
    assert (count(db, Subscriber), count(db, Message), count(db, SubscriptionEvent)) == (0, 0, 0)


# --- the markup -------------------------------------------------------------------------------------

def test_popup_markup_carries_the_merchant_text_and_the_disclosure(client, db, shop, signed):
    response = client.get(f"/proxy/popup?{signed()}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for text in ("Ten percent off", "Texts from the bakery.", "Join us", 'name="phone"',
                 'type="checkbox"', "By submitting, you agree to receive recurring automated marketing texts from "
                 "Alpha Bakery at this number. Consent is not a condition of purchase. Msg &amp; data rates may "
                 "apply. Reply STOP to unsubscribe, HELP for help."):
        assert text in html
    assert response.headers["Cache-Control"] == "no-store"


def test_merchant_text_is_escaped(client, db, shop, signed):
    shop.popup_settings = {**ON, "headline": "<script>alert(1)</script>"}
    db.commit()
    html = client.get(f"/proxy/popup?{signed()}").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_popup_off_shows_nothing_and_signs_up_no_one(client, db, shop, signed):
    shop.popup_settings = {**ON, "enabled": False}
    db.commit()
    response = client.get(f"/proxy/popup?{signed()}")
    assert response.status_code == 204 and response.data == b""
    refused = sign_up(client, signed())
    assert refused.status_code == 404 and refused.json == {"ok": False, "field": None, "error": "Sign-up is closed."}
    nothing_stored(db)


def test_each_shop_gets_its_own_popup(client, db, shop, signed):
    make_shop("beta.myshopify.com", is_demo=True, popup_settings={**ON, "headline": "Beta deals"})
    assert "Beta deals" in client.get(f"/proxy/popup?{signed('beta.myshopify.com')}").get_data(as_text=True)
    assert "Ten percent off" in client.get(f"/proxy/popup?{signed()}").get_data(as_text=True)


# --- signing up -------------------------------------------------------------------------------------

def test_sign_up_creates_a_pending_subscriber_and_texts_the_confirmation(client, db, shop, signed):
    response = sign_up(client, signed())
    assert response.status_code == 200 and response.json["ok"] is True
    assert response.json["message"] == popup.SUCCESS_MESSAGE
    assert get_queue().drain(20)
    db.expire_all()
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.shop_id, subscriber.phone, subscriber.status, subscriber.source) == (
        shop.id, "+16502530000", "pending", "mobile_popup")
    assert subscriber.consent_text == popup.disclosure(shop)
    assert subscriber.consent_ip == "203.0.113.9" and subscriber.consent_at is not None
    message = db.scalar(select(Message))
    assert (message.subscriber_id, message.kind, message.to_phone) == (subscriber.id, "confirmation", "+16502530000")
    assert "Reply Y to confirm" in message.body and message.status == "sent"
    event = db.scalar(select(SubscriptionEvent))
    assert (event.kind, event.source) == ("pending", "mobile_popup") and "IP 203.0.113.9" in event.detail


def test_popup_is_double_opt_in_even_when_the_shop_turned_it_off(client, db, shop, signed):
    shop.double_opt_in = False
    db.commit()
    assert sign_up(client, signed()).status_code == 200
    db.expire_all()
    assert db.scalar(select(Subscriber.status)) == "pending"
    assert db.scalar(select(Message.kind)) == "confirmation"


@pytest.mark.parametrize("phone, message", [
    ("hello", "hello is not a phone number: use digits, with + and the country code."),
    ("+1 650 253", "+1 650 253 is too short to be a phone number."),
    ("650 253 0000", "650 253 0000 is missing the country code: write it with + and the country code, "
                     "e.g. +1 415 555 2671."),
    ("", "Enter your mobile number."),
])
def test_bad_phone_is_answered_beside_the_field_and_stores_nothing(client, db, shop, signed, phone, message):
    response = sign_up(client, signed(), phone=phone)
    assert response.status_code == 422
    assert response.json == {"ok": False, "field": "phone", "error": message}
    nothing_stored(db)


def test_national_number_is_read_in_the_storefront_country(client, db, shop, signed):
    assert sign_up(client, signed(), phone="(650) 253-0000", country="US").status_code == 200
    db.expire_all()
    assert db.scalar(select(Subscriber.phone)) == "+16502530000"


def test_consent_box_must_be_ticked(client, db, shop, signed):
    response = client.post(f"/proxy/popup?{signed()}", data={"phone": "+16502530000"})
    assert response.status_code == 422 and response.json["field"] == "consent"
    nothing_stored(db)


def test_bad_signature_stores_nothing(client, db, shop, signed):
    response = sign_up(client, signed().replace("signature=", "signature=f"))
    assert response.status_code == 401
    response = sign_up(client, signed(timestamp=1317327555))
    assert response.status_code == 401
    nothing_stored(db)


def test_same_number_again_soon_gets_no_second_text(client, db, shop, signed):
    assert sign_up(client, signed()).status_code == 200
    assert sign_up(client, signed(), phone="+16502530000").status_code == 200
    assert get_queue().drain(20)
    assert count(db, Subscriber) == 1 and count(db, Message) == 1


def test_pending_number_gets_the_confirmation_again_after_the_cool_down(db, shop):
    first = popup.sign_up(db, shop, "+16502530000", consented=True, ip="203.0.113.9")
    later = first.consent_at + dt.timedelta(seconds=popup.defaults.POPUP_RESEND_COOLDOWN_SECONDS + 1)
    popup.sign_up(db, shop, "+16502530000", consented=True, ip="203.0.113.9", now=later)
    assert get_queue().drain(20)
    assert count(db, Message) == 2 and count(db, Subscriber) == 1


def test_one_ip_cannot_sign_up_many_numbers(client, db, shop, signed, monkeypatch):
    monkeypatch.setattr(popup.defaults, "POPUP_SIGNUPS_PER_IP_PER_HOUR", 2)
    for n in range(2):
        assert sign_up(client, signed(), phone=f"+1650253000{n}").status_code == 200
    response = sign_up(client, signed(), phone="+16502530009")
    assert response.status_code == 429 and response.json["ok"] is False
    assert response.json["error"] == "Too many sign-up attempts. Try again later."
    other_ip = client.post(f"/proxy/popup?{signed()}", data={"phone": "+16502530009", "consent": "1"},
                           headers={"X-Forwarded-For": "198.51.100.1"})
    assert other_ip.status_code == 200
    assert get_queue().drain(20)
    assert count(db, Subscriber) == 3


def test_known_numbers_count_against_the_ip_and_get_the_same_answer_as_unknown_ones(client, db, shop, signed,
                                                                                   monkeypatch):
    from kinnekt.subscribers import optin
    monkeypatch.setattr(popup.defaults, "POPUP_SIGNUPS_PER_IP_PER_HOUR", 2)
    optin.subscribe(db, shop, "+16502530100", source="keyword", consent_text="Texted JOIN", double_opt_in=False)
    stopped = optin.subscribe(db, shop, "+16502530101", source="keyword", consent_text="Texted JOIN",
                              double_opt_in=False)
    optin.unsubscribe(db, stopped, reason='Texted "STOP"', source="sms")
    for n in range(2):
        assert sign_up(client, signed(), phone=f"+1650253000{n}").status_code == 200
    unknown = sign_up(client, signed(), phone="+16502530009")
    assert unknown.status_code == 429
    for known in ("+16502530100", "+16502530101", "+16502530000"):  # subscribed, opted out, pending
        response = sign_up(client, signed(), phone=known)
        assert (response.status_code, response.json) == (429, unknown.json), known
    assert unknown.json == {"ok": False, "field": None, "error": popup.TOO_MANY_ATTEMPTS}
    assert get_queue().drain(20)
    db.expire_all()
    assert db.scalar(select(Subscriber).where(Subscriber.phone == "+16502530101")).status == "unsubscribed"
    assert count(db, Message) == 2  # the two accepted sign-ups' confirmations, nothing more
    assert count(db, SignupAttempt) == 2  # refused attempts leave nothing behind


def test_one_number_cannot_be_signed_up_over_and_over_from_many_ips(client, db, shop, signed, monkeypatch):
    monkeypatch.setattr(popup.defaults, "POPUP_SIGNUPS_PER_NUMBER_PER_DAY", 2)
    monkeypatch.setattr(popup.defaults, "POPUP_RESEND_COOLDOWN_SECONDS", 0)  # each accepted attempt texts
    statuses = [client.post(f"/proxy/popup?{signed()}", data={"phone": "+16502530000", "consent": "1"},
                            headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(1, 4)]
    assert statuses == [200, 200, 429]
    assert sign_up(client, signed(), phone="+16502530001").status_code == 200  # other numbers are not held up
    assert get_queue().drain(20)
    db.expire_all()
    texted = db.scalars(select(Message.to_phone).order_by(Message.id)).all()
    assert texted == ["+16502530000", "+16502530000", "+16502530001"]


def test_an_unreadable_forwarded_for_does_not_lift_the_ip_limit(client, db, shop, signed, monkeypatch):
    monkeypatch.setattr(popup.defaults, "POPUP_SIGNUPS_PER_IP_PER_HOUR", 2)
    statuses = [client.post(f"/proxy/popup?{signed()}", data={"phone": f"+1650253000{n}", "consent": "1"},
                            headers={"X-Forwarded-For": forwarded}).status_code
                for n, forwarded in enumerate(["not-an-ip", "999.1.1.1", "203.0.113.9, junk"])]
    assert statuses == [200, 200, 429]
    db.expire_all()
    assert count(db, Subscriber) == 2 and db.scalars(select(Subscriber.consent_ip)).all() == [None, None]


def test_an_opted_out_number_stays_opted_out_and_is_asked_at_most_once_a_month(client, db, shop, signed):
    from kinnekt.subscribers import optin
    shop.sender = "15550100200"
    db.commit()
    subscriber = optin.subscribe(db, shop, "+16502530000", source="keyword", consent_text="Texted JOIN",
                                 double_opt_in=False)
    optin.unsubscribe(db, subscriber, reason='Texted "STOP"', source="sms")
    db.expire_all()
    opted_out_at = db.scalar(select(Subscriber.unsubscribed_at))

    def state():
        db.expire_all()
        row = db.scalar(select(Subscriber))
        return row.status, row.unsubscribed_at, row.source

    assert sign_up(client, signed()).json == {"ok": True, "message": popup.SUCCESS_MESSAGE}
    assert get_queue().drain(20)
    assert state() == ("unsubscribed", opted_out_at, "keyword")  # the opt-out stands
    [asked] = db.scalars(select(Message)).all()
    assert (asked.kind, asked.status, asked.to_phone) == ("confirmation", "sent", "+16502530000")
    assert "Reply Y to confirm" in asked.body

    # later sign-ups of that number, from anywhere, text it nothing within 30 days
    for ip in ("198.51.100.1", "198.51.100.2"):
        response = client.post(f"/proxy/popup?{signed()}", data={"phone": "+16502530000", "consent": "1"},
                               headers={"X-Forwarded-For": ip})
        assert response.json == {"ok": True, "message": popup.SUCCESS_MESSAGE}
    assert get_queue().drain(20)
    assert count(db, Message) == 1 and state()[0] == "unsubscribed"
    kinds = db.scalars(select(SubscriptionEvent.kind).order_by(SubscriptionEvent.id)).all()
    assert kinds == ["subscribed", "unsubscribed", "reoptin_asked"]

    # a month on, a sign-up may ask once more; the number is subscribed again only when it replies Y
    db.execute(update(Subscriber).values(reoptin_asked_at=utcnow() - dt.timedelta(days=31)))
    db.commit()
    assert sign_up(client, signed()).status_code == 200
    assert get_queue().drain(20)
    assert count(db, Message) == 2 and state()[0] == "unsubscribed"
    from tests.fake_vonage import inbound_body
    reply = client.post("/sms/inbound", json=inbound_body("Y", from_="16502530000", to="15550100200"))
    assert reply.status_code == 204
    assert get_queue().drain(20)
    assert state()[0] == "subscribed"


def test_only_a_request_made_after_the_latest_opt_out_reaches_an_opted_out_number(db, shop):
    from kinnekt.sms import outgoing
    now = utcnow()
    subscriber = Subscriber(shop_id=shop.id, phone="+16502530000", source="keyword", status="unsubscribed",
                            unsubscribed_at=now - dt.timedelta(days=1), reoptin_asked_at=now - dt.timedelta(days=3))
    db.add(subscriber)
    db.commit()

    def confirmation(queued_at):
        message = Message(shop_id=shop.id, subscriber_id=subscriber.id, kind="confirmation", to_phone=subscriber.phone,
                          body="Reply Y", status="pending", created_at=queued_at)
        db.add(message)
        db.commit()
        return message.id

    # asked three days ago, opted out again since: the request (and anything older) is held back
    stale = confirmation(now - dt.timedelta(days=3))
    assert outgoing.deliver(db, stale) == "skipped"
    db.execute(update(Subscriber).values(reoptin_asked_at=now))
    db.commit()
    older, fresh = confirmation(now - dt.timedelta(hours=1)), confirmation(now)
    assert [outgoing.deliver(db, older), outgoing.deliver(db, fresh)] == ["skipped", "sent"]
    db.expire_all()
    assert db.get(Message, stale).skip_reason == "unsubscribed"


def test_attempts_at_the_same_moment_cannot_pass_the_limit_together(app, db, shop, monkeypatch):
    monkeypatch.setattr(popup.defaults, "POPUP_SIGNUPS_PER_IP_PER_HOUR", 2)
    barrier = threading.Barrier(6)
    outcomes = []

    def attempt(n):
        with app.app_context():
            session = Session()
            own = session.get(type(shop), shop.id)
            barrier.wait()
            try:
                popup.sign_up(session, own, f"+1650253000{n}", consented=True, ip="203.0.113.9")
                outcomes.append(200)
            except popup.SignupError as exc:
                outcomes.append(exc.status)
            finally:
                Session.remove()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 6 and outcomes.count(200) <= 2 and set(outcomes) <= {200, 429}
    db.expire_all()
    assert count(db, SignupAttempt) == outcomes.count(200) == count(db, Subscriber)


def test_old_attempts_are_pruned(db, shop):
    from kinnekt.subscribers.tasks import prune_signup_attempts
    db.add_all([SignupAttempt(shop_id=shop.id, ip="203.0.113.9", phone="+16502530000",
                              at=utcnow() - dt.timedelta(days=2)),
                SignupAttempt(shop_id=shop.id, ip="203.0.113.9", phone="+16502530001", at=utcnow())])
    db.commit()
    assert prune_signup_attempts() == 1
    assert db.scalars(select(SignupAttempt.phone)).all() == ["+16502530001"]


def test_a_subscribed_number_stays_subscribed_and_gets_no_text(client, db, shop, signed):
    from kinnekt.subscribers import optin
    optin.subscribe(db, shop, "+16502530000", source="keyword", consent_text="Texted JOIN", double_opt_in=False)
    response = sign_up(client, signed())
    # the same answer as for a new number: the form does not tell who is on the list
    assert response.status_code == 200 and response.json == {"ok": True, "message": popup.SUCCESS_MESSAGE}
    assert get_queue().drain(20)
    db.expire_all()
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.status, subscriber.source) == ("subscribed", "keyword")
    assert count(db, Message) == 0
    assert db.scalars(select(SubscriptionEvent.kind).order_by(SubscriptionEvent.id)).all() == ["subscribed", "consent"]


# --- settings ---------------------------------------------------------------------------------------

def test_settings_defaults_fill_gaps_and_ignore_junk(db, shop):
    shop.popup_settings = {"headline": "Hi", "delay_seconds": "soon", "unknown": 1}
    assert popup.settings_for(shop) == popup.PopupSettings(headline="Hi")


def test_settings_card_shows_the_form_and_the_preview(client, auth, shop):
    html = client.get("/settings/signup/popup", headers=auth).get_data(as_text=True)
    assert 'id="settings-popup"' in html and 'id="popup-preview"' in html
    assert 'value="Ten percent off"' in html and 'checked' in html
    assert "Alpha Bakery at this number" in html


def test_preview_follows_the_form_without_saving(client, db, auth, shop):
    response = client.post("/settings/signup/popup/preview", headers=auth,
                           data={"headline": "Fresh bread alerts", "body": "", "button": "Text me"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="popup-preview"')
    assert "Fresh bread alerts" in html and "Text me" in html and "Texts from the bakery." not in html
    db.expire_all()
    assert popup.settings_for(db.get(type(shop), shop.id)).headline == "Ten percent off"


def test_saving_valid_settings(client, db, auth, shop):
    response = client.post("/settings/signup/popup", headers=auth, data={
        "enabled": "on", "headline": "  Fresh   bread ", "body": "Weekly.", "button": "Join"})
    assert response.status_code == 200 and "Saved" in response.get_data(as_text=True)
    db.expire_all()
    saved = db.get(type(shop), shop.id).popup_settings
    assert saved == {"enabled": True, "headline": "Fresh bread", "body": "Weekly.", "button": "Join",
                     "ask_birthday": False, "ask_language": False}  # the delay is the app embed's, not ours
    client.post("/settings/signup/popup", headers=auth, data={"headline": "A", "button": "B"})
    db.expire_all()
    assert db.get(type(shop), shop.id).popup_settings["enabled"] is False


@pytest.mark.parametrize("field, value, error", [
    ("headline", "", "Headline cannot be empty."),
    ("headline", "x" * 81, "Headline can be at most 80 characters (it has 81)."),
    ("button", "", "Button text cannot be empty."),
    ("body", "y" * 301, "Body text can be at most 300 characters (it has 301)."),
])
def test_bad_settings_show_the_error_beside_the_field_and_save_nothing(client, db, auth, shop, field, value, error):
    form = {"enabled": "on", "headline": "New", "body": "", "button": "Go", field: value}
    html = client.post("/settings/signup/popup", headers=auth, data=form).get_data(as_text=True)
    assert f'id="popup-{field.split("_")[0]}-error"' in html and error in html
    db.expire_all()
    assert db.get(type(shop), shop.id).popup_settings == ON


def test_settings_are_per_shop(client, db, token_for, shop):
    other = make_shop("beta.myshopify.com", popup_settings={})
    headers = {"Authorization": f"Bearer {token_for(other.domain)}", "HX-Request": "true"}
    client.post("/settings/signup/popup", headers=headers,
                data={"enabled": "on", "headline": "Beta", "button": "Go"})
    db.expire_all()
    assert db.get(type(shop), shop.id).popup_settings == ON
    assert db.get(type(other), other.id).popup_settings["headline"] == "Beta"


def test_settings_page_has_the_popup_and_share_cards(client, auth, shop):
    html = client.get("/settings/", headers=auth).get_data(as_text=True)
    assert 'id="settings-popup"' in html and 'id="settings-share"' in html


# --- optional fields: profile properties ------------------------------------------------------------

@pytest.fixture
def asking(db, shop):
    """The shop's popup asks for a birthday and a language."""
    shop.popup_settings = {**ON, "ask_birthday": True, "ask_language": True}
    db.commit()
    return shop


def values_of(db, subscriber) -> dict:
    from kinnekt.subscribers import properties
    db.expire_all()
    return properties.values(db, subscriber.shop_id, subscriber.id)


def test_optional_fields_show_only_when_switched_on(client, db, shop, signed):
    html = client.get(f"/proxy/popup?{signed()}").get_data(as_text=True)
    assert 'name="birthday"' not in html and 'name="language"' not in html
    shop.popup_settings = {**ON, "ask_birthday": True}
    db.commit()
    html = client.get(f"/proxy/popup?{signed()}").get_data(as_text=True)
    assert 'name="birthday" type="date"' in html and 'name="language"' not in html


def test_a_sign_up_keeps_its_birthday_and_language(client, db, asking, signed):
    response = sign_up(client, signed(), birthday="1990-07-04", language=" Deutsch ")
    assert response.status_code == 200 and response.json["ok"] is True
    subscriber = db.scalar(select(Subscriber))
    assert subscriber.status == "pending"
    assert values_of(db, subscriber) == {"birthday": dt.date(1990, 7, 4), "language": "Deutsch"}


def test_fields_left_empty_keep_nothing_and_fields_not_asked_are_ignored(client, db, shop, signed):
    assert sign_up(client, signed(), birthday="1990-07-04", language="fr").json["ok"] is True
    assert values_of(db, db.scalar(select(Subscriber))) == {}


def test_a_bad_birthday_is_answered_beside_its_field_and_stores_nothing(client, db, asking, signed):
    response = sign_up(client, signed(), birthday="1990-02-30", language="fr")
    assert response.status_code == 422
    assert response.json == {"ok": False, "field": "birthday", "error": "Enter your birthday as a date."}
    nothing_stored(db)


def test_a_subscribed_numbers_profile_is_not_changed_by_a_stranger(client, db, asking, signed):
    from kinnekt.subscribers import optin
    optin.subscribe(db, asking, "+16502530000", source="keyword", consent_text="Texted JOIN", double_opt_in=False)
    assert sign_up(client, signed(), birthday="1990-07-04").json["ok"] is True
    assert values_of(db, db.scalar(select(Subscriber))) == {}


def test_the_settings_switch_the_fields_on_and_the_preview_shows_them(client, db, auth, shop):
    response = client.post("/settings/signup/popup", headers=auth, data={
        "enabled": "on", "headline": "Hi", "body": "", "button": "Join",
        "ask_birthday": "on"})
    html = response.get_data(as_text=True)
    assert 'id="kn-birthday-preview"' in html and 'id="kn-language-preview"' not in html
    db.expire_all()
    saved = popup.settings_for(db.get(type(shop), shop.id))
    assert (saved.ask_birthday, saved.ask_language, saved.asked) == (True, False, ["birthday"])
