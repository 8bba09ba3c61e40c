"""Each shop sends from its own number and hears on it: the sender chosen per recipient country (the fake Vonage
sees `from`, the message records it), inbound texts routed to the shop by the number texted (keywords within that
shop), an unknown number routed as before, receipts applied to the message they name, and each number's rate (from
its kind) held beside the account's with two senders at once."""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest
from redis import Redis
from sqlalchemy import select

from kinnekt.db import utcnow
from kinnekt.models import InboundMessage, Message, SenderNumber, Subscriber
from kinnekt.sms import ratelimit, senders
from kinnekt.sms.outgoing import queue_message
from kinnekt.subscribers import optin
from kinnekt.subscribers.keywords import create_keyword
from kinnekt.tenancy import bind_shop
from tests.conftest import make_shop
from tests.fake_vonage import inbound_body, status_body
from tests.helpers import drain
from tests.test_campaign_sending import rows, send_now, wait_for
from tests.test_campaign_audience import segment
from tests.test_us_registration import approve

pytestmark = pytest.mark.usefixtures("settled_jobs")

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")
US_TOLL_FREE = "18885550101"
US_LONG_CODE = "12125550142"
GB_MOBILE = "447700900123"
US_PHONE = "+12125550187"
GB_PHONE = "+447400123456"
FR_PHONE = "+33612345678"


def number(db, shop, msisdn, country="US", kind="toll_free", *, default=True, linked=True, **fields):
    """A sender of `shop`, set up as Settings leaves it."""
    row = SenderNumber(shop_id=shop.id, msisdn=msisdn, country=country, kind=kind, is_default=default,
                       linked_at=utcnow() if linked else None, features=["SMS"], **fields)
    db.add(row)
    db.commit()
    return row


def subscribed(db, shop, phone):
    return optin.subscribe(db(), shop, phone, source="manual", consent_text="Added by the merchant",
                           double_opt_in=False)


# --- which sender ---------------------------------------------------------------------------------------------------

def test_the_sender_is_the_countrys_default_else_the_shops_default_else_the_fallback(app, db):
    shop = make_shop(sender=None)
    app.config["VONAGE_SENDER"], before = "15550100200", app.config.get("VONAGE_SENDER")
    try:
        assert senders.choose(db(), shop, US_PHONE).address == "15550100200"  # rule 4: the app's sender
        shop.sender = "AcmeShop"
        db.commit()
        assert senders.choose(db(), shop, US_PHONE) == senders.Sender("AcmeShop")  # rule 3: the Sender setting
        number(db, shop, US_TOLL_FREE)
        number(db, shop, "Northwind", country="GB", kind="alphanumeric")
        number(db, shop, US_LONG_CODE, kind="long_code", default=False)
        number(db, shop, "15550100999", country="CA", kind="long_code", linked=False)  # not linked: never used
        us = senders.choose(db(), shop, US_PHONE)
        assert us == senders.Sender("+" + US_TOLL_FREE, 3, us.sender_number_id)
        assert senders.choose(db(), shop, GB_PHONE).address == "Northwind"
        # France has no default: the shop's default number, not the British name (France allows names, but the
        # name was set up for the UK; a number reaches everywhere).
        assert senders.choose(db(), shop, FR_PHONE).address == "+" + US_TOLL_FREE
        assert senders.choose(db(), shop, "+15145550123").address == "+" + US_TOLL_FREE  # Canada: no names
        assert senders.choose(db(), shop).address == "+" + US_TOLL_FREE
    finally:
        app.config["VONAGE_SENDER"] = before


def test_the_rate_comes_from_the_kind_unless_the_number_has_its_own(db, shop):
    rates = {kind: senders.rate_for(SenderNumber(kind=kind)) for kind in
             ("toll_free", "long_code", "mobile", "alphanumeric")}
    assert rates == {"toll_free": 3, "long_code": 1, "mobile": 1, "alphanumeric": 0}
    assert senders.rate_for(SenderNumber(kind="long_code", messages_per_second=4)) == 4
    limits = ratelimit.limits_for("app", "+" + US_TOLL_FREE, {"SMS_RATE_PER_SECOND": 30,
                                                             "SMS_SENDER_RATE_PER_SECOND": 30}, 3)
    assert [limit.per_second for limit in limits] == [30, 3]
    assert ratelimit.limits_for("app", "Northwind", {"SMS_RATE_PER_SECOND": 30}, 0)[1].per_second == 0  # account's


# --- sending from the shop's number ----------------------------------------------------------------------------------

def test_a_reply_goes_out_from_the_shops_number_for_the_recipients_country(db, vonage_config):
    shop = make_shop(sender=None)
    number(db, shop, US_TOLL_FREE)
    number(db, shop, GB_MOBILE, country="GB", kind="mobile")
    us, gb = subscribed(db, shop, US_PHONE), subscribed(db, shop, GB_PHONE)
    first = queue_message(db(), shop, us, "Thanks!", kind="reply")
    second = queue_message(db(), shop, gb, "Cheers!", kind="reply")
    drain()
    by_to = {m["to"]: m["from"] for m in vonage_config.sent()}
    assert by_to == {US_PHONE.lstrip("+"): US_TOLL_FREE, GB_PHONE.lstrip("+"): GB_MOBILE}
    db.expire_all()
    assert (db.get(Message, first.id).sender, db.get(Message, second.id).sender) == \
        ("+" + US_TOLL_FREE, "+" + GB_MOBILE)
    assert db.get(Message, first.id).status == "sent"


def test_a_shop_without_numbers_sends_from_vonage_sender(db, vonage_config):
    shop = make_shop(sender=None)
    other = make_shop("beta.myshopify.com", sender=None)
    number(db, other, US_TOLL_FREE)  # another shop's number is never ours
    message = queue_message(db(), shop, subscribed(db, shop, US_PHONE), "Hello", kind="reply")
    drain()
    assert [m["from"] for m in vonage_config.sent()] == ["15550100200"]
    db.expire_all()
    assert db.get(Message, message.id).sender == "15550100200"


def test_a_campaign_goes_out_from_each_countrys_number(db, shop_us, vonage_config):
    shop_us.sender = None
    db.commit()
    approve(db, shop_us, number(db, shop_us, US_TOLL_FREE))  # a US number sends to the US once registered
    number(db, shop_us, GB_MOBILE, country="GB", kind="mobile")
    people = [subscribed(db, shop_us, phone) for phone in (US_PHONE, "+12125550188", GB_PHONE)]
    audience = segment(db, shop_us, "Everyone", ["US", "GB"])
    campaign = wait_for(db, send_now(db, shop_us, [audience]))
    assert campaign.status == "completed"
    assert sorted((m["to"], m["from"]) for m in vonage_config.sent()) == sorted(
        [(p.phone.lstrip("+"), GB_MOBILE if p.phone.startswith("+44") else US_TOLL_FREE) for p in people])
    assert sorted(m.sender for m in rows(db, campaign)) == ["+" + US_TOLL_FREE] * 2 + ["+" + GB_MOBILE]


def test_the_demo_outbox_shows_the_shops_number(db):
    shop = make_shop("demo.myshopify.com", is_demo=True, sender="+1 888 555 0199")
    number(db, shop, US_TOLL_FREE)
    queue_message(db(), shop, subscribed(db, shop, US_PHONE), "Hi", kind="reply")
    drain()
    from kinnekt.models import OutboxMessage
    db.expire_all()
    assert db.scalars(select(OutboxMessage.sender)).all() == ["+" + US_TOLL_FREE]


# --- inbound routed by number ---------------------------------------------------------------------------------------

def test_inbound_texts_reach_the_shop_that_owns_the_number_and_its_keywords(client, db):
    alpha = make_shop("alpha.myshopify.com", sender=None, is_demo=True, double_opt_in=False)
    beta = make_shop("beta.myshopify.com", sender=None, is_demo=True, double_opt_in=False)
    number(db, alpha, US_TOLL_FREE)
    number(db, beta, US_LONG_CODE, kind="long_code")
    for shop in (alpha, beta):
        create_keyword(db(), shop, word="JOIN", reply_text=f"Welcome to {shop.name}!")
    assert client.post("/sms/inbound", json=inbound_body("JOIN", from_="12125550187", to=US_LONG_CODE)).status_code \
        == 204
    assert client.post("/sms/inbound", json=inbound_body("JOIN", from_="12125550188", to=US_TOLL_FREE)).status_code \
        == 204
    drain()
    bind_shop(None)
    db.expire_all()
    routed = {row.from_phone: row.shop_id for row in db.scalars(select(InboundMessage))}
    assert routed == {"+12125550187": beta.id, "+12125550188": alpha.id}
    members = {row.phone: row.shop_id for row in db.scalars(select(Subscriber))}
    assert members == {"+12125550187": beta.id, "+12125550188": alpha.id}
    # STOP to one shop's number opts out of that shop only.
    client.post("/sms/inbound", json=inbound_body("STOP", from_="12125550187", to=US_LONG_CODE))
    drain()
    db.expire_all()
    assert {row.shop_id: row.status for row in db.scalars(select(Subscriber))} == \
        {beta.id: "unsubscribed", alpha.id: "subscribed"}


def test_an_unknown_number_falls_back_to_todays_routing(client, db, app, monkeypatch):
    monkeypatch.setitem(app.config, "VONAGE_SENDER", "15550100200")
    shared = make_shop("alpha.myshopify.com", sender=None, is_demo=True)
    owner = make_shop("beta.myshopify.com", sender=None, is_demo=True)
    number(db, owner, US_TOLL_FREE)
    client.post("/sms/inbound", json=inbound_body("HELP", from_="12125550187", to="15550100200"))
    client.post("/sms/inbound", json=inbound_body("HELP", from_="12125550188", to="15559999999"))  # nobody's
    drain()
    bind_shop(None)
    db.expire_all()
    assert [(row.from_phone, row.shop_id) for row in db.scalars(select(InboundMessage))] == \
        [("+12125550187", shared.id)]


def test_a_released_or_alphanumeric_sender_routes_nothing(client, db):
    shop = make_shop("alpha.myshopify.com", sender=None, is_demo=True)
    number(db, shop, US_TOLL_FREE, status="released", default=False)
    number(db, shop, "Northwind", country="GB", kind="alphanumeric")
    for to in (US_TOLL_FREE, "Northwind"):
        client.post("/sms/inbound", json=inbound_body("HELP", from_="12125550187", to=to))
    drain()
    bind_shop(None)
    assert db.scalars(select(InboundMessage)).all() == []


def test_a_receipt_settles_only_the_message_it_names(client, db, vonage_config):
    alpha, beta = make_shop(sender=None), make_shop("beta.myshopify.com", sender=None)
    number(db, alpha, US_TOLL_FREE)
    number(db, beta, US_LONG_CODE, kind="long_code")
    mine = queue_message(db(), alpha, subscribed(db, alpha, US_PHONE), "A", kind="reply")
    theirs = queue_message(db(), beta, subscribed(db, beta, US_PHONE), "B", kind="reply")
    drain()
    db.expire_all()
    uuid_ = db.get(Message, mine.id).provider_id
    body = status_body("delivered", message_uuid=uuid_, to=US_PHONE.lstrip("+"), **{"from": US_TOLL_FREE})
    assert client.post("/sms/receipt", json=body).status_code == 204
    db.expire_all()
    assert (db.get(Message, mine.id).status, db.get(Message, theirs.id).status) == ("delivered", "sent")


# --- the per-number rate --------------------------------------------------------------------------------------------

def max_in_window(stamps: list[float], window: float = 1.0) -> int:
    stamps, best, j = sorted(stamps), 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


@pytest.fixture
def redis_limiter(app, monkeypatch):
    """The app's limiter in Redis (REDIS_URL_FOR_TESTS), on an account of its own; its keys deleted afterwards."""
    monkeypatch.setitem(app.config, "REDIS_URL", REDIS_URL)
    monkeypatch.setitem(app.config, "SMS_RATE_PER_SECOND", 5)
    account = f"test-account-{uuid.uuid4().hex}"
    yield account
    client = Redis.from_url(REDIS_URL)
    hashed = hashlib.sha256(account.encode()).hexdigest()[:16]
    for key in [f"kinnekt:sms:rate:account:{hashed}", *client.scan_iter("kinnekt:sms:rate:sender:+1888555*")]:
        client.delete(key)


def test_two_senders_on_one_number_never_pass_its_rate_nor_the_account_limit(app, redis_limiter):
    toll_free = "+1888555" + uuid.uuid4().hex[:4].translate(str.maketrans("abcdef", "123456"))
    long_code = toll_free[:-1] + ("0" if toll_free[-1] != "0" else "1")
    rate = senders.rate_for(SenderNumber(kind="toll_free"))
    stamps: dict[str, list[float]] = {toll_free: [], long_code: []}
    lock = threading.Lock()

    def sender(address: str, per_second: int, count: int):
        with app.app_context():
            limiter = ratelimit.limiter_for(redis_limiter, address, per_second)
            got = [limiter.acquire(max_wait=60) for _ in range(count)]
        with lock:
            stamps[address].extend(got)

    threads = [threading.Thread(target=sender, args=(toll_free, rate, 6)) for _ in range(2)]
    threads.append(threading.Thread(target=sender, args=(long_code, 1, 3)))
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(stamps[toll_free]) == 12 and len(stamps[long_code]) == 3
    assert max_in_window(stamps[toll_free]) <= rate == 3  # two senders share the number's 3 a second
    assert max_in_window(stamps[long_code]) <= 1
    assert max_in_window(stamps[toll_free] + stamps[long_code]) <= 5  # and the account's limit holds over both
    assert time.monotonic() - started >= 3  # 12 grants at 3 a second take more than 3 s
