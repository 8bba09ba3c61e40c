"""Inbound SMS: the Messages API webhook, its signed JWT, intents (every opt-out word), and their handling."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import itertools
import time

import pytest
from sqlalchemy import func, select

from kinnekt.db import utcnow
from kinnekt.models import InboundMessage, Message, OutboxMessage, SegmentMember, SignatureNonce, Subscriber
from kinnekt.sms import webhook_auth
from kinnekt.subscribers import inbound, optin
from kinnekt.subscribers.keywords import create_keyword
from tests.conftest import make_shop
from tests.fake_vonage import inbound_body, signed_headers
from tests.helpers import drain

SENDER = "15550100200"
MSISDN = "447400123456"
PHONE = "+" + MSISDN
_ids = itertools.count(1)

pytestmark = pytest.mark.usefixtures("settled_jobs")


def params(text: str, *, msisdn: str = MSISDN, to: str = SENDER, **extra) -> dict:
    """An inbound webhook as the Messages API posts it."""
    return inbound_body(text, from_=msisdn, to=to, **extra)


def post(client, data: dict, headers: dict | None = None):
    """POST the webhook as Vonage does (JSON). Parts of a long text (the `concat` keys) never come through the
    webhook any more (the Messages API joins them); inbound.receive still takes them, so they go to it directly."""
    if "concat" in data:
        from kinnekt.db import Session
        from kinnekt.subscribers.phones import from_msisdn
        inbound.receive(Session, dict(provider_id=data["message_uuid"], from_phone=from_msisdn(data["from"]),
                                      to_number=data["to"], text=data["text"], concat_ref=data["concat-ref"],
                                      concat_total=int(data["concat-total"]), concat_part=int(data["concat-part"])))
        return None
    return client.post("/sms/inbound", data=json.dumps(data),
                       headers=headers or {"Content-Type": "application/json"})


def outbox_texts(db) -> list[str]:
    db.expire_all()
    return db.scalars(select(OutboxMessage.text).order_by(OutboxMessage.id)).all()


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


@pytest.fixture
def shop(db):
    """A demo shop (its texts go to the Outbox) texting from SENDER, with double opt-in on."""
    return make_shop("acme.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True)


def subscribed(db, shop, phone=PHONE):
    return optin.subscribe(db(), shop, phone, source="manual", consent_text="Added by the merchant",
                           double_opt_in=False)


# --- the webhook --------------------------------------------------------------------------------------

def test_an_inbound_text_is_stored_once_and_handled(client, db, shop):
    data = params("HELP")
    assert post(client, data).status_code == 204
    assert post(client, data).status_code == 204  # Vonage retried: a no-op
    drain()
    [row] = db.scalars(select(InboundMessage)).all()
    assert (row.provider_id, row.from_phone, row.to_number, row.text) == (data["message_uuid"], PHONE, SENDER, "HELP")
    assert row.intent == "help" and row.processed_at is not None and row.shop_id == shop.id
    assert outbox_texts(db) == ["Acme: Reply STOP to unsubscribe. Msg & data rates may apply."]


@pytest.mark.parametrize("change", [
    {"from": ""}, {"from": "44abc"}, {"from": "123"}, {"from": None},
    {"message_uuid": ""}, {"message_uuid": "x" * 65}, {"to": ""}, {"to": ["15550100200"]},
    {"message_type": "image"}, {"channel": "whatsapp"}, {"text": "x" * 1601}, {"text": {"body": "HELP"}},
    {"from": {"nested": "1"}}, {"from": True},
])
def test_malformed_requests_are_400_and_store_nothing(client, db, shop, change):
    data = {**params("HELP"), **change}
    response = post(client, data)
    assert response.status_code == 400 and response.get_json()["error"] == "malformed"
    assert count(db, InboundMessage) == 0


def test_non_object_json_is_400(client, db, shop):
    assert client.post("/sms/inbound", json=["HELP"]).status_code == 400
    assert client.post("/sms/inbound", data="{not json", content_type="application/json").status_code == 400
    assert count(db, InboundMessage) == 0


def test_text_to_a_number_no_shop_uses_is_acknowledged_and_dropped(client, db, shop):
    assert post(client, params("HELP", to="15559999999")).status_code == 204
    assert count(db, InboundMessage) == 0


def test_oversized_body_is_refused(app, client, db, shop, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_WEBHOOK_BYTES", 100)
    assert post(client, params("x" * 200)).status_code == 413
    assert count(db, InboundMessage) == 0


# --- signatures -------------------------------------------------------------------------------------

SECRET = "sig-secret-0123456789abcdef-0123456789"


@pytest.fixture
def signing(app, monkeypatch):
    """Require signed webhooks; returns a function that posts a body with Vonage's JWT (claims overridable)."""
    monkeypatch.setitem(app.config, "VONAGE_SIGNATURE_SECRET", SECRET)

    def signed_post(client, data: dict, *, secret: str = SECRET, raw: bytes | None = None, **claims):
        body = json.dumps(data).encode()
        headers = signed_headers(raw if raw is not None else body, secret, **claims)
        return client.post("/sms/inbound", data=body, headers=headers)
    return signed_post


def test_signed_requests_are_accepted(client, db, shop, signing):
    assert signing(client, params("Hi & welcome = yes")).status_code == 204
    assert count(db, InboundMessage) == 1


@pytest.mark.parametrize("spoil", ["wrong secret", "tampered body", "no token", "not bearer", "stale", "future",
                                   "no iat", "no payload_hash", "other algorithm", "garbage", "huge token"])
def test_bad_signatures_are_401_and_store_nothing(client, db, shop, signing, spoil):
    data = params("HELP")
    if spoil == "wrong secret":
        response = signing(client, data, secret="another-secret-0123456789abcdef-0123")
    elif spoil == "tampered body":
        response = signing(client, data, raw=json.dumps(params("START")).encode())
    elif spoil in ("stale", "future"):
        response = signing(client, data, issued=time.time() + (-400 if spoil == "stale" else 400))
    elif spoil == "no payload_hash":
        response = signing(client, data, payload_hash=None)
    else:
        import jwt
        body = json.dumps(data).encode()
        token = {"no token": "", "not bearer": "Basic " + webhook_auth.sign(body, SECRET),
                 "garbage": "Bearer not.a.token", "huge token": "Bearer " + "a" * 5000,
                 "no iat": "Bearer " + jwt.encode({"payload_hash": hashlib.sha256(body).hexdigest(), "jti": "j"},
                                                  SECRET, algorithm="HS256"),
                 "other algorithm": "Bearer " + jwt.encode({"payload_hash": hashlib.sha256(body).hexdigest(),
                                                            "iat": int(time.time()), "jti": "j2"},
                                                           SECRET, algorithm="HS512")}[spoil]
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        response = client.post("/sms/inbound", data=body, headers=headers)
    assert response.status_code == 401 and response.get_json()["error"] == "bad signature"
    assert count(db, InboundMessage) == 0


def test_a_signed_body_that_is_malformed_is_400(client, db, shop, signing):
    assert signing(client, {**params("HELP"), "from": "44abc"}).status_code == 400
    assert count(db, InboundMessage) == 0


def test_a_reused_token_is_refused(client, db, shop, signing):
    data = params("HELP")
    assert signing(client, data, jti="same-jti").status_code == 204
    assert signing(client, data, jti="same-jti").status_code == 401  # a replay of the very same request
    assert count(db, InboundMessage) == 1 and count(db, SignatureNonce) == 1


def test_a_request_whose_handling_failed_gives_its_token_back_so_the_retry_is_taken(client, db, shop, signing,
                                                                                       monkeypatch):
    real = inbound.receive

    def down(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(inbound, "receive", down)
    data = params("STOP")
    assert signing(client, data, jti="retried-jti").status_code == 500  # Vonage will retry
    monkeypatch.setattr(inbound, "receive", real)
    assert signing(client, data, jti="retried-jti").status_code == 204  # Vonage's retry, with the same token
    assert count(db, InboundMessage) == 1
    assert signing(client, data, jti="retried-jti").status_code == 401  # handled: now a replay


def test_token_ids_in_redis_when_configured():
    from redis import Redis
    from tests.worker_env import REDIS_URL
    seen = webhook_auth.redis_nonce_store(Redis.from_url(REDIS_URL), 60, prefix=f"test:nonce:{time.time_ns()}:")
    assert seen("abc") is False and seen("abc") is True and seen("abd") is False
    seen.forget("abc")
    assert seen("abc") is False


def test_the_sdks_check_accepts_our_tokens_but_ignores_the_body_hash():
    """Why kinnekt/sms/webhook_auth.py exists: the SDK's verify_signature checks the signature only."""
    from vonage_jwt import verify_signature
    token = webhook_auth.sign(b'{"text": "HELP"}', SECRET)
    assert verify_signature(token, SECRET) is True
    with pytest.raises(webhook_auth.WebhookAuthError, match="payload_hash"):
        webhook_auth.verify("Bearer " + token, b'{"text": "STOP"}', SECRET)


def test_old_nonces_are_pruned(db):
    from kinnekt.sms.tasks import prune_signature_nonces
    db.add_all([SignatureNonce(nonce="old", seen_at=utcnow() - dt.timedelta(hours=1)), SignatureNonce(nonce="new")])
    db.commit()
    assert prune_signature_nonces() == 1
    assert db.scalars(select(SignatureNonce.nonce)).all() == ["new"]


# --- what a text means ------------------------------------------------------------------------------

OPT_OUTS = [
    "STOP", "stop", "Stop.", "STOP!!!", " stop ", "STOPALL", "stop all", "UNSUBSCRIBE", "Unsubscribe", "CANCEL",
    "END", "QUIT", "REVOKE", "OPT OUT", "opt-out", "OPTOUT", "Opt out please",
    "stop texting me", "Stop texting me!", "please stop", "Please stop.", "stop please", "STOP NOW",
    "stop sending me texts", "stop messaging me", "remove me", "Remove me from your list",
    "unsubscribe me", "please unsubscribe me", "take me off your list", "how do I unsubscribe?",
    "don't text me", "do not text me again", "no more texts", "leave me alone", "wrong number",
    "cancel subscription", "Stop 🛑", "end it", "quit texting me",
]
NOT_OPT_OUTS = [
    "when does the sale stop?", "Will the promo end soon?", "cancel my order #1001", "Does the sale end today?",
    "I can't stop buying your stuff", "don't stop texting me, love the deals", "please don't unsubscribe me",
    "Is there a bus stop near the store?", "What time do you close?", "Thanks!", "", "stop by the store today?",
    "I never want to quit you guys", "HELP", "START",
]


@pytest.mark.parametrize("text", OPT_OUTS)
def test_opt_out_words_and_phrases(text):
    assert inbound.classify(text) == "stop"


@pytest.mark.parametrize("text", NOT_OPT_OUTS)
def test_sentences_that_merely_contain_a_word_are_not_opt_outs(text):
    assert inbound.classify(text) != "stop"


@pytest.mark.parametrize("text, intent", [
    ("HELP", "help"), ("help me", "help"), ("Info", "help"), ("I need help with my order", "other"),
    ("START", "start"), ("unstop", "start"), ("YES", "start"), ("y", "start"), ("Yes please!", "start"),
    ("yes but what about shipping?", "other"),
    ("SALE", "keyword"), ("sale please", "keyword"), ("Sale!", "keyword"), ("SALES", "other"),
    ("hello there", "other"),
])
def test_other_intents(text, intent):
    assert inbound.classify(text, frozenset({"SALE"})) == intent


# --- handling -----------------------------------------------------------------------------------------

def test_stop_unsubscribes_at_once_and_confirms_once(client, db, shop):
    sub = subscribed(db, shop)
    post(client, params("Stop texting me"))
    post(client, params("STOP"))  # already unsubscribed: no second confirmation
    drain()
    db.expire_all()
    sub = db.get(Subscriber, sub.id)
    assert sub.status == "unsubscribed" and sub.unsubscribe_reason == 'Texted "Stop texting me"'
    assert outbox_texts(db) == ["Acme: You are unsubscribed and will get no more messages. Reply START to resubscribe."]
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]
    assert set(db.scalars(select(InboundMessage.intent)).all()) == {"stop"}


def test_stop_through_vonage_sends_one_confirmation(client, db, vonage_config):
    real = make_shop("acme.myshopify.com", sender=SENDER)
    sub = subscribed(db, real)
    post(client, params("UNSUBSCRIBE"))
    drain()
    assert [f["text"] for f in vonage_config.sent()] == [
        "Acme: You are unsubscribed and will get no more messages. Reply START to resubscribe."]
    assert vonage_config.sent()[0]["to"] == MSISDN and vonage_config.sent()[0]["from"] == SENDER
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "unsubscribed"


def test_stop_applies_to_every_shop_sharing_the_number(client, db, shop):
    other = make_shop("other.myshopify.com", sender="+1 555 010 0200", is_demo=True)
    a, b = subscribed(db, shop), subscribed(db, other)
    post(client, params("STOP"))
    drain()
    db.expire_all()
    assert db.get(Subscriber, a.id).status == db.get(Subscriber, b.id).status == "unsubscribed"
    assert len(outbox_texts(db)) == 1


def test_non_opt_out_sentence_is_kept_for_the_inbox(client, db, shop):
    sub = subscribed(db, shop)
    post(client, params("when does the sale stop?"))
    drain()
    row = db.scalars(select(InboundMessage)).one()
    assert (row.intent, row.subscriber_id) == ("other", sub.id)
    assert db.get(Subscriber, sub.id).status == "subscribed" and outbox_texts(db) == []


def test_help_is_answered_even_after_an_opt_out(client, db, shop):
    sub = subscribed(db, shop)
    optin.unsubscribe(db(), sub, reason="STOP", source="sms")
    shop.help_text = "Acme texts: deals weekly. Reply STOP to opt out."
    db.commit()
    post(client, params("INFO"))
    drain()
    assert outbox_texts(db) == ["Acme: Acme texts: deals weekly. Reply STOP to opt out."]


def test_start_resubscribes(client, db, shop):
    sub = subscribed(db, shop)
    optin.unsubscribe(db(), sub, reason="STOP", source="sms")
    post(client, params("START"))
    drain()
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "subscribed"
    assert outbox_texts(db) == ["Acme: You are subscribed again. Reply HELP for help, STOP to unsubscribe."]


def test_start_from_an_unknown_number_creates_nobody(client, db, shop):
    post(client, params("START"))
    drain()
    assert count(db, Subscriber) == 0 and db.scalars(select(InboundMessage.intent)).one() == "start"


def test_double_opt_in_keyword_then_y(client, db, shop):
    keyword = create_keyword(db(), shop, word="SALE", reply_text="Welcome! Use SALE10 for 10% off.")
    post(client, params("sale"))
    drain()
    sub = db.scalars(select(Subscriber)).one()
    assert (sub.status, sub.source, sub.keyword, sub.keyword_id) == ("pending", "keyword", "SALE", keyword.id)
    assert sub.consent_message_id is not None and 'Texted "sale" to 15550100200' == sub.consent_text
    [prompt] = outbox_texts(db)
    assert "Reply Y to confirm" in prompt
    post(client, params("Y"))
    drain()
    db.expire_all()
    sub = db.get(Subscriber, sub.id)
    assert sub.status == "subscribed" and sub.subscribed_at is not None
    assert outbox_texts(db)[1:] == ["Welcome! Use SALE10 for 10% off."]
    segment_id = db.scalar(select(SegmentMember.segment_id).where(SegmentMember.subscriber_id == sub.id))
    from kinnekt.models import Segment
    assert db.get(Segment, segment_id).name == "Keyword: SALE"


def test_keyword_without_double_opt_in_replies_at_once(client, db, shop):
    shop.double_opt_in = False
    db.commit()
    create_keyword(db(), shop, word="JOIN", reply_text="Thanks for joining Acme!")
    post(client, params("JOIN"))
    drain()
    assert db.scalars(select(Subscriber.status)).one() == "subscribed"
    assert outbox_texts(db) == ["Thanks for joining Acme!"]


def test_inactive_keyword_subscribes_nobody(client, db, shop):
    keyword = create_keyword(db(), shop, word="OLD")
    keyword.active = False
    db.commit()
    post(client, params("OLD"))
    drain()
    assert count(db, Subscriber) == 0 and db.scalars(select(InboundMessage.intent)).one() == "other"


def test_keyword_from_a_number_not_in_the_metadata_still_subscribes(client, db, shop):
    shop.double_opt_in = False
    db.commit()
    create_keyword(db(), shop, word="JOIN")
    post(client, params("JOIN", msisdn="447700900123"))  # a drama-range number: it texted us, so it exists
    drain()
    assert db.scalars(select(Subscriber.phone)).one() == "+447700900123"


def test_shared_number_goes_to_the_shop_of_the_keyword_or_the_subscriber(client, db, shop):
    other = make_shop("other.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=False)
    create_keyword(db(), other, word="DEALS")
    post(client, params("DEALS"))
    drain()
    assert db.scalars(select(Subscriber.shop_id)).one() == other.id
    post(client, params("what time do you open?"))
    drain()
    rows = db.scalars(select(InboundMessage).order_by(InboundMessage.id)).all()
    assert [r.shop_id for r in rows] == [other.id, other.id]  # the shop where the number subscribed
    post(client, params("hello", msisdn="447400123999"))  # unknown to both: the shop installed first
    drain()
    assert db.scalars(select(InboundMessage.shop_id).order_by(InboundMessage.id.desc())).first() == shop.id


def test_long_text_in_parts_is_handled_once(client, db, shop):
    sub = subscribed(db, shop)
    common = {"concat": "true", "concat-ref": "42", "concat-total": "2"}
    post(client, params(" want to stop texting me", **common, **{"concat-part": "2"}))
    drain()
    assert db.scalars(select(InboundMessage.intent)).one() == "part"
    first = params("Hi, I really do", **common, **{"concat-part": "1"})
    post(client, first)
    post(client, first)  # repeated part
    drain()
    rows = db.scalars(select(InboundMessage).order_by(InboundMessage.concat_part)).all()
    assert [(r.concat_part, r.intent) for r in rows] == [(1, "stop"), (2, "merged")]
    assert rows[0].text == "Hi, I really do want to stop texting me"
    assert db.get(Subscriber, sub.id).status == "unsubscribed" and len(outbox_texts(db)) == 1


def test_long_text_with_a_lost_part_is_handled_after_the_wait(client, db, shop):
    post(client, params("Part one of three", **{"concat": "true", "concat-ref": "9", "concat-total": "3",
                                                "concat-part": "1"}))
    drain()
    row = db.scalars(select(InboundMessage)).one()
    row.received_at = utcnow() - dt.timedelta(hours=1)
    db.commit()
    from kinnekt.subscribers.tasks import requeue_inbound_sms
    assert requeue_inbound_sms() == 1
    db.expire_all()
    assert db.scalars(select(InboundMessage.intent)).one() == "other"


def test_recovery_requeues_an_unhandled_text(client, db, shop):
    db.add(InboundMessage(shop_id=shop.id, provider_id="lost-1", from_phone=PHONE, to_number=SENDER, text="HELP",
                          received_at=utcnow() - dt.timedelta(minutes=5)))
    db.commit()
    from kinnekt.subscribers.tasks import requeue_inbound_sms
    assert requeue_inbound_sms() == 1
    drain()
    assert db.scalars(select(InboundMessage.intent)).one() == "help"
    assert requeue_inbound_sms() == 0


# --- an opt-out is in force before the webhook answers ------------------------------------------------

def queued(jobs, name: str) -> list[tuple]:
    """The arguments of each job of this name the request queued."""
    return [args for job_name, args, *_ in jobs.jobs if job_name == name]


@pytest.mark.parametrize("text", ["STOP", "Please stop texting me", "unsubscribe me"])
def test_an_opt_out_is_in_force_when_the_webhook_answers(client, db, shop, jobs, text):
    """No job runs here: the request itself unsubscribed the number in every shop sharing it, recorded the intent
    and queued the one confirmation (sent by a worker); nothing is left for an inbound job."""
    other = make_shop("other.myshopify.com", sender="+1 555 010 0200", is_demo=True)
    a, b = subscribed(db, shop), subscribed(db, other)
    assert post(client, params(text)).status_code == 204
    db.expire_all()
    assert db.get(Subscriber, a.id).status == db.get(Subscriber, b.id).status == "unsubscribed"
    row = db.scalars(select(InboundMessage)).one()
    assert row.intent == "stop" and row.processed_at is not None and row.subscriber_id in (a.id, b.id)
    [confirmation] = db.scalars(select(Message)).all()
    assert (confirmation.kind, confirmation.status, confirmation.to_phone) == ("stop_confirm", "pending", PHONE)
    assert queued(jobs, "send_message") == [(confirmation.id,)]
    assert queued(jobs, "process_inbound") == []


@pytest.mark.parametrize("text, intent", [("HELP", "help"), ("START", "start"), ("JOIN now", "keyword")])
def test_texts_that_send_something_are_left_to_a_worker_as_before(client, db, shop, jobs, text, intent):
    sub = subscribed(db, shop)
    create_keyword(db(), shop, word="JOIN", reply_text="Welcome!")
    assert post(client, params(text)).status_code == 204
    row = db.scalars(select(InboundMessage)).one()
    assert (row.processed_at, row.intent) == (None, None)  # untouched by the request
    assert queued(jobs, "process_inbound") == [(row.id,)] and queued(jobs, "send_message") == []
    assert db.get(Subscriber, sub.id).status == "subscribed"
    assert inbound.process(db(), row.id) == intent  # the worker's job


@pytest.mark.parametrize("text", ["Thanks!", "when does the sale stop?", "don't stop texting me", "join"])
def test_a_text_asking_for_nothing_is_filed_in_the_request_and_takes_no_worker(client, db, shop, jobs, text):
    """A campaign's replies ("Thanks!") come by the hundred while it sends: each is filed before the 204 (its
    intent and subscriber recorded, as the worker would), and none becomes a job beside the sends and webhooks.
    ("join" is no keyword of this shop: JOIN belongs to another one.)"""
    sub = subscribed(db, shop)
    other = make_shop("other.myshopify.com", sender="15550109999", is_demo=True)
    create_keyword(db(), other, word="JOIN", reply_text="Welcome!")
    before = jobs.names()
    assert post(client, params(text)).status_code == 204
    db.expire_all()
    row = db.scalars(select(InboundMessage)).one()
    assert (row.intent, row.subscriber_id) == ("other", sub.id) and row.processed_at is not None
    assert jobs.names() == before  # nothing queued by the text
    assert db.get(Subscriber, sub.id).status == "subscribed" and count(db, Message) == 0
    assert inbound.process(db(), row.id) == "already processed"  # a stray job would do nothing


def test_a_text_asking_for_nothing_whose_filing_failed_goes_to_a_worker(client, db, shop, jobs, monkeypatch):
    sub = subscribed(db, shop)
    real, calls = inbound.handle, []

    def fails_once(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(inbound, "handle", fails_once)
    assert post(client, params("Thanks!")).status_code == 204
    db.expire_all()
    row = db.scalars(select(InboundMessage)).one()
    assert (row.processed_at, row.intent) == (None, None)  # its claim was given back
    assert queued(jobs, "process_inbound") == [(row.id,)]
    assert inbound.process(db(), row.id) == "other"
    db.expire_all()
    assert db.get(InboundMessage, row.id).subscriber_id == sub.id and calls == ["Thanks!", "Thanks!"]


def test_a_resent_stop_changes_and_queues_nothing_more(client, db, shop, jobs):
    from kinnekt.models import SubscriptionEvent
    sub = subscribed(db, shop)
    data = params("STOP")
    for _ in range(3):
        assert post(client, data).status_code == 204  # Vonage resent the same message_uuid
    row = db.scalars(select(InboundMessage)).one()
    assert row.intent == "stop"
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]
    events = db.scalars(select(SubscriptionEvent.kind).where(SubscriptionEvent.subscriber_id == sub.id)).all()
    assert events.count("unsubscribed") == 1
    assert jobs.names().count("send_message") == 1 and queued(jobs, "process_inbound") == []
    assert inbound.process(db(), row.id) == "already processed"  # a stray job would do nothing either


def test_a_failure_in_the_request_answers_204_and_leaves_the_stop_to_a_worker(client, db, shop, jobs, monkeypatch):
    sub = subscribed(db, shop)
    real, calls = optin.unsubscribe, []

    def fails_once(*args, **kwargs):
        calls.append(args[1].id)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(optin, "unsubscribe", fails_once)
    assert post(client, params("STOP")).status_code == 204
    assert calls == [sub.id]  # it was tried in the request
    db.expire_all()
    row = db.scalars(select(InboundMessage)).one()
    assert (row.processed_at, row.intent) == (None, None)  # its claim was given back
    assert queued(jobs, "process_inbound") == [(row.id,)]
    assert db.get(Subscriber, sub.id).status == "subscribed" and count(db, Message) == 0
    assert inbound.process(db(), row.id) == "stop"  # the worker's job does it all
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "unsubscribed"
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]


def test_a_failure_after_the_opt_out_still_gets_its_one_confirmation(client, db, shop, jobs, monkeypatch):
    """The request unsubscribed the number (committed) and failed before queueing the confirmation: the worker
    that handles the text again finds nobody to change, and still confirms once; a later STOP does not."""
    sub = subscribed(db, shop)
    real, calls = inbound.queue_message, []

    def fails_once(*args, **kwargs):
        calls.append(kwargs["kind"])
        if len(calls) == 1:
            raise ConnectionError("Redis went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(inbound, "queue_message", fails_once)
    assert post(client, params("STOP")).status_code == 204
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "unsubscribed"  # in force all the same
    row = db.scalars(select(InboundMessage)).one()
    assert queued(jobs, "process_inbound") == [(row.id,)] and count(db, Message) == 0
    assert inbound.process(db(), row.id) == "stop"
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]
    assert post(client, params("STOP")).status_code == 204  # a new text: already unsubscribed, no confirmation
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]
    assert calls == ["stop_confirm", "stop_confirm"]


def test_a_text_whose_job_cannot_be_queued_is_still_answered_204(client, db, shop, jobs, monkeypatch):
    def redis_down(*args, **kwargs):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(jobs, "enqueue", redis_down)
    assert post(client, params("HELP")).status_code == 204
    db.expire_all()
    row = db.scalars(select(InboundMessage)).one()
    assert row.processed_at is None  # the recovery finds it
    row.received_at = utcnow() - dt.timedelta(minutes=5)
    db.commit()
    assert inbound.due_for_recovery(db()) == [row.id]


LONG = {"concat": "true", "concat-ref": "77", "concat-total": "2"}


def test_the_last_part_of_a_long_opt_out_puts_it_in_force(client, db, shop, jobs):
    sub = subscribed(db, shop)
    post(client, params(" want to stop texting me", **LONG, **{"concat-part": "2"}))
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "subscribed"  # half a text: left to the worker
    second = db.scalars(select(InboundMessage)).one()
    post(client, params("Hi, I really do", **LONG, **{"concat-part": "1"}))
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "unsubscribed"
    rows = db.scalars(select(InboundMessage).order_by(InboundMessage.concat_part)).all()
    assert [(r.concat_part, r.intent) for r in rows] == [(1, "stop"), (2, "merged")]
    assert rows[0].text == "Hi, I really do want to stop texting me"
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]
    assert queued(jobs, "process_inbound") == [(second.id,)]  # from the first part's request only
    assert inbound.process(db(), second.id) == "already processed"  # that job finds it done
    post(client, params("Hi, I really do", **LONG, **{"concat-part": "1"}))  # a repeated part: filed by a worker
    late = db.scalars(select(InboundMessage).order_by(InboundMessage.id.desc())).first()
    assert queued(jobs, "process_inbound")[-1] == (late.id,)
    assert inbound.process(db(), late.id) == "already processed"
    db.expire_all()
    assert db.get(InboundMessage, late.id).intent == "merged" and count(db, Message) == 1


def test_a_long_text_that_is_no_opt_out_is_left_to_workers(client, db, shop, jobs):
    sub = subscribed(db, shop)
    post(client, params("When does the sale ", **LONG, **{"concat-part": "1"}))
    post(client, params("stop? I want the red one", **LONG, **{"concat-part": "2"}))
    ids = [r.id for r in db.scalars(select(InboundMessage).order_by(InboundMessage.id))]
    assert queued(jobs, "process_inbound") == [(i,) for i in ids]
    assert [inbound.process(db(), i) for i in ids] == ["waiting for parts", "other"]
    assert db.get(Subscriber, sub.id).status == "subscribed"


def test_a_long_opt_out_whose_handling_failed_goes_back_to_the_workers_whole(client, db, shop, jobs, monkeypatch):
    sub = subscribed(db, shop)
    real, calls = optin.unsubscribe, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(optin, "unsubscribe", fails_once)
    post(client, params("Hi, I really do", **LONG, **{"concat-part": "1"}))
    post(client, params(" want to stop texting me", **LONG, **{"concat-part": "2"}))
    assert calls == [1]
    db.expire_all()
    rows = db.scalars(select(InboundMessage).order_by(InboundMessage.concat_part)).all()
    assert [(r.processed_at, r.intent) for r in rows] == [(None, None), (None, None)]  # both given back
    first, second = (r.id for r in rows)
    assert queued(jobs, "process_inbound") == [(first,), (first,), (second,)]  # RQ keeps one job per id
    assert [inbound.process(db(), i) for i in (first, second)] == ["waiting for parts", "stop"]
    db.expire_all()
    assert db.get(Subscriber, sub.id).status == "unsubscribed"
    assert db.scalars(select(Message.kind)).all() == ["stop_confirm"]
