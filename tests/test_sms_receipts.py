"""Delivery receipts (the Messages API's status webhook), status updates that only move forward, unknown outcomes
settled by client_ref, permanent failures suppressing the number, idempotency, bad input."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from kinnekt.db import utcnow
from kinnekt.models import Message, Subscriber, SubscriptionEvent
from kinnekt.queue import get_queue
from kinnekt.sms import prices
from kinnekt.sms.outgoing import queue_message
from kinnekt.subscribers import optin
from tests.conftest import make_shop
from tests.fake_vonage import signed_headers, status_body

PHONE = "+447400123456"

pytestmark = pytest.mark.usefixtures("settled_jobs")


UUID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"


def receipt(status="delivered", *, message_id=UUID, client_ref=None, err=None, price="0.0333", **extra) -> dict:
    """A message status webhook as the Messages API posts it."""
    return status_body(status, message_uuid=message_id or None, client_ref=client_ref, code=err, price=price, **extra)


def post(client, data: dict, headers: dict | None = None):
    return client.post("/sms/receipt", data=json.dumps(data), headers=headers or {"Content-Type": "application/json"})


@pytest.fixture
def sent(db):
    """A shop, a subscriber, and a message Vonage accepted (status sent, provider id known)."""
    shop = make_shop(sender="15550100200")
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="x")
    message = Message(shop_id=shop.id, subscriber_id=sub.id, kind="reply", to_phone=PHONE, body="hello",
                      status="sent", provider_id=UUID, sent_at=utcnow())
    db.add(message)
    db.flush()
    message.client_ref = f"m{message.id}"
    db.commit()
    return message


def reload(db, model, id_):
    db.expire_all()
    return db.get(model, id_)


def test_delivered(client, db, sent):
    assert post(client, receipt(currency="USD")).status_code == 204
    message = reload(db, Message, sent.id)
    assert message.status == "delivered" and message.delivered_at is not None
    assert message.price == Decimal("0.0333")
    first_delivered_at = message.delivered_at
    assert post(client, receipt()).status_code == 204  # again: nothing changes
    assert reload(db, Message, sent.id).delivered_at == first_delivered_at


def test_a_price_in_the_accounts_euros_is_not_recorded_as_dollars(client, db, sent):
    assert post(client, receipt(price="0.0571", currency="eur")).status_code == 204
    message = reload(db, Message, sent.id)
    assert message.status == "delivered" and message.price is None  # the app's prices are US dollars
    sent_again = reload(db, Message, sent.id)
    sent_again.price = Decimal("0.0081")  # what the price table gave it when Vonage accepted it
    db.commit()
    assert post(client, receipt("delivered", price="0.0571")).status_code == 204
    assert reload(db, Message, sent.id).price == Decimal("0.0081")


@pytest.mark.parametrize("status", ["failed", "rejected", "undeliverable"])
def test_failures_record_the_error(client, db, sent, status):
    post(client, receipt(status, err="1180"))
    message = reload(db, Message, sent.id)
    assert (message.status, message.error_code) == ("failed", "dlr-1180")
    assert message.error_reason == f"{status}: Absent subscriber (temporary)"
    assert reload(db, Subscriber, sent.subscriber_id).suppressed_at is None  # temporary: keep texting


def test_a_failed_receipt_takes_its_message_out_of_last_received(client, db, sent):
    """The contract: `last_received_sms` looks at accepted messages no receipt reported failed; `sent_count`
    still counts the failed one. The segment compiler reads the recomputed fact."""
    import datetime as dt
    from kinnekt.segments import members
    shop = sub_shop(db, db.get(Subscriber, sent.subscriber_id))
    earlier = sent.sent_at - dt.timedelta(days=10)
    db.add(Message(shop_id=sent.shop_id, subscriber_id=sent.subscriber_id, kind="reply", to_phone=PHONE,
                   body="earlier", status="delivered", sent_at=earlier))
    sub = db.get(Subscriber, sent.subscriber_id)
    sub.sent_count, sub.last_received_at = 2, sent.sent_at
    db.commit()
    recent = {"match": "all", "rules": [{"field": "last_received_sms", "op": "within_last_days", "value": 2}]}
    assert members(db(), recent, shop=shop, now=utcnow()) == [sub.id]
    post(client, receipt("failed", err="1180"))
    sub = reload(db, Subscriber, sent.subscriber_id)
    assert (sub.last_received_at, sub.sent_count) == (earlier, 2)
    assert members(db(), recent, shop=shop, now=utcnow()) == []
    # the only message failing leaves no date at all
    db.execute(Message.__table__.delete().where(Message.body == "earlier"))
    db.commit()
    from kinnekt.sms.receipts import recompute_last_received
    recompute_last_received(db(), sub.id)
    db.commit()
    assert reload(db, Subscriber, sub.id).last_received_at is None


@pytest.mark.parametrize("err, reason", [("1190", "Absent subscriber (permanent)"), ("1200", "Call barred by user"),
                                         ("1240", "Illegal number (opted out of this service)"),
                                         ("1050", "Number barred")])
def test_permanent_failures_suppress_the_number(client, db, sent, err, reason):
    post(client, receipt("failed", err=err))
    post(client, receipt("failed", err=err))
    sub = reload(db, Subscriber, sent.subscriber_id)
    assert sub.suppressed_at is not None and sub.suppressed_reason == f"Delivery failed: {reason}"
    assert not sub.marketable
    kinds = db.scalars(select(SubscriptionEvent.kind).where(SubscriptionEvent.subscriber_id == sub.id)).all()
    assert kinds.count("suppressed") == 1
    # a suppressed number gets no more replies
    later = queue_message(db(), sub_shop(db, sub), sub, "another", kind="reply")
    assert get_queue().drain(20)
    later = reload(db, Message, later.id)
    assert (later.status, later.skip_reason) == ("skipped", "suppressed")


def sub_shop(db, sub):
    from kinnekt.models import Shop
    return db.get(Shop, sub.shop_id)


def test_statuses_only_move_forward(client, db, sent):
    post(client, receipt("delivered"))
    post(client, receipt("submitted"))
    assert reload(db, Message, sent.id).status == "delivered"
    post(client, receipt("failed", err="1230"))
    post(client, receipt("delivered"))
    assert reload(db, Message, sent.id).status == "failed"


def test_submitted_settles_a_message_still_sending(client, db, sent):
    sent.status = "sending"
    db.commit()
    post(client, receipt("submitted"))
    assert reload(db, Message, sent.id).status == "sent"


def test_unknown_outcome_is_settled_by_client_ref_and_counted_once(client, db, sent):
    sent.status, sent.provider_id, sent.sent_at = "unknown", None, None
    db.commit()
    data = receipt("delivered", message_id="cccccccc-0000-4000-8000-00000000aaaa", client_ref=sent.client_ref)
    post(client, data)
    post(client, data)
    message = reload(db, Message, sent.id)
    assert (message.status, message.provider_id) == ("delivered", "cccccccc-0000-4000-8000-00000000aaaa")
    assert message.sent_at is not None
    assert reload(db, Subscriber, sent.subscriber_id).sent_count == 1


def test_a_row_without_a_client_ref_is_found_by_its_own_id(client, db, sent):
    """Campaign and automation rows store no client_ref; the sender sends m<id>, and only such a row answers to it."""
    sent.status, sent.provider_id, sent.client_ref = "unknown", None, None
    db.commit()
    response = post(client, receipt("delivered", message_id="cccccccc-0000-4000-8000-00000000cccc",
                                    client_ref=f"m{sent.id}"))
    assert response.status_code == 204
    assert reload(db, Message, sent.id).status == "delivered"
    other = Message(shop_id=sent.shop_id, kind="reply", to_phone=PHONE, body="hi", status="unknown",
                    client_ref="t-help")
    db.add(other)
    db.commit()
    # m<id> of a row that carries a client_ref of its own is not that row's.
    response = post(client, receipt("delivered", message_id="cccccccc-0000-4000-8000-00000000dddd",
                                    client_ref=f"m{other.id}"))
    assert response.status_code == 204
    assert reload(db, Message, other.id).status == "unknown"


def test_a_failure_with_only_a_detail_keeps_vonages_words(client, db, sent):
    post(client, receipt("rejected", client_ref=sent.client_ref, error={"type": "about:blank", "detail": "No route"}))
    message = reload(db, Message, sent.id)
    assert (message.status, message.error_code, message.error_reason) == ("failed", "dlr-rejected",
                                                                          "rejected: No route")


def test_receipt_before_the_send_is_recorded_is_retried(client, db, sent):
    from kinnekt.sms.tasks import process_receipt
    data = receipt("delivered", message_id="dddddddd-0000-4000-8000-00000000bbbb", client_ref="m999999")
    assert post(client, data).status_code == 204
    assert reload(db, Message, sent.id).status == "sent"
    sent.client_ref = "m999999"  # now the send is recorded
    db.commit()
    assert process_receipt(data, 2) == "delivered"
    assert process_receipt(receipt("delivered", message_id="nope"), 3) == "no message"


@pytest.mark.parametrize("data", [
    {"message_uuid": UUID},                                              # no status
    receipt("teleported"),
    receipt("read"),                                                     # not an SMS status
    receipt(channel="whatsapp"),
    receipt(message_id=""),                                              # neither id nor client_ref
    receipt(err="x1"),
    receipt("failed", error={"title": "²²²²"}),                          # a code in other digits
    receipt("failed", error="Absent"),                                   # not an object
    receipt(usage={"price": "free"}),
    receipt(usage={"price": "-1"}),
    receipt(usage=["0.03"]),
    receipt(usage={"price": str(2**63)}),
    receipt(message_id="x" * 65),
    receipt(message_id={"uuid": UUID}),
    [receipt()],
])
def test_malformed_receipts_are_400_and_change_nothing(client, db, sent, data):
    assert post(client, data).status_code == 400
    assert reload(db, Message, sent.id).status == "sent"


@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_400(client, db, sent, body):
    response = client.post("/sms/receipt", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["error"] == "malformed"


def test_only_post_is_taken(client, db, sent):
    assert client.get("/sms/receipt", query_string={"status": "delivered", "message_uuid": UUID}).status_code == 405
    assert reload(db, Message, sent.id).status == "sent"


def test_signed_receipts(app, client, db, sent, monkeypatch):
    monkeypatch.setitem(app.config, "VONAGE_SIGNATURE_SECRET", "sig-secret-0123456789abcdef")
    raw = json.dumps(receipt()).encode()
    bad = signed_headers(raw, "another-secret-0123456789abcdef")
    assert client.post("/sms/receipt", data=raw, headers=bad).status_code == 401
    assert reload(db, Message, sent.id).status == "sent"
    good = signed_headers(raw, "sig-secret-0123456789abcdef")
    assert client.post("/sms/receipt", data=raw, headers=good).status_code == 204
    assert reload(db, Message, sent.id).status == "delivered"


def test_end_to_end_send_then_receipt(client, db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="x")
    message = queue_message(db(), shop, sub, "hello", kind="reply")
    assert get_queue().drain(20)
    message = reload(db, Message, message.id)
    assert message.status == "sent"
    post(client, receipt("delivered", message_id=message.provider_id, client_ref=message.client_ref,
                         price="0.04"))
    message = reload(db, Message, message.id)
    # the price set at the send (the table's: the Messages API's answer has none) is kept
    assert message.status == "delivered" and message.price == prices.price_per_part(prices.country_of(PHONE))
    assert reload(db, Subscriber, sub.id).sent_count == 1
