"""Delivery receipts: each Vonage format, status updates that only move forward, unknown outcomes settled by
client-ref, permanent failures suppressing the number, idempotency, bad input."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from kinnekt.db import utcnow
from kinnekt.models import Message, Subscriber, SubscriptionEvent
from kinnekt.queue import get_queue
from kinnekt.sms import signatures
from kinnekt.sms.outgoing import queue_message
from kinnekt.subscribers import optin
from tests.conftest import make_shop

PHONE = "+447400123456"

pytestmark = pytest.mark.usefixtures("settled_jobs")


def receipt(status="delivered", *, message_id="0B00000012345678", client_ref=None, err="0", price="0.03330000",
            **extra) -> dict:
    """A delivery receipt as Vonage sends it."""
    data = {"msisdn": PHONE[1:], "to": "15550100200", "network-code": "23410", "messageId": message_id,
            "price": price, "status": status, "scts": "2611221000", "err-code": err, "api-key": "fakekey1",
            "message-timestamp": "2026-11-22 10:00:05"}
    if client_ref:
        data["client-ref"] = client_ref
    data.update(extra)
    return {k: v for k, v in data.items() if v is not None}


def post(client, data: dict, how: str = "form"):
    if how == "get":
        return client.get("/sms/receipt", query_string=data)
    if how == "json":
        return client.post("/sms/receipt", json=data)
    return client.post("/sms/receipt", data=data)


@pytest.fixture
def sent(db):
    """A shop, a subscriber, and a message Vonage accepted (status sent, provider id known)."""
    shop = make_shop(sender="15550100200")
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="x")
    message = Message(shop_id=shop.id, subscriber_id=sub.id, kind="reply", to_phone=PHONE, body="hello",
                      status="sent", provider_id="0B00000012345678", sent_at=utcnow())
    db.add(message)
    db.flush()
    message.client_ref = f"m{message.id}"
    db.commit()
    return message


def reload(db, model, id_):
    db.expire_all()
    return db.get(model, id_)


@pytest.mark.parametrize("how", ["get", "form", "json"])
def test_delivered_in_each_format(client, db, sent, how):
    assert post(client, receipt(), how).status_code == 204
    message = reload(db, Message, sent.id)
    assert message.status == "delivered" and message.delivered_at is not None
    assert message.price == Decimal("0.0333")
    first_delivered_at = message.delivered_at
    assert post(client, receipt(), how).status_code == 204  # again: nothing changes
    assert reload(db, Message, sent.id).delivered_at == first_delivered_at


@pytest.mark.parametrize("status", ["failed", "rejected", "expired"])
def test_failures_record_the_error(client, db, sent, status):
    post(client, receipt(status, err="2"))
    message = reload(db, Message, sent.id)
    assert (message.status, message.error_code) == ("failed", "dlr-2")
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
    post(client, receipt("failed", err="2"))
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


@pytest.mark.parametrize("err, reason", [("3", "Absent subscriber (permanent)"), ("4", "Call barred by user"),
                                         ("9", "Illegal number (opted out of this service)")])
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
    post(client, receipt("buffered"))
    assert reload(db, Message, sent.id).status == "delivered"
    post(client, receipt("failed", err="5"))
    post(client, receipt("delivered"))
    assert reload(db, Message, sent.id).status == "failed"


def test_accepted_settles_a_message_still_sending(client, db, sent):
    sent.status = "sending"
    db.commit()
    post(client, receipt("accepted"))
    assert reload(db, Message, sent.id).status == "sent"


def test_unknown_outcome_is_settled_by_client_ref_and_counted_once(client, db, sent):
    sent.status, sent.provider_id, sent.sent_at = "unknown", None, None
    db.commit()
    data = receipt("delivered", message_id="0C0000000000AAAA", client_ref=sent.client_ref)
    post(client, data)
    post(client, data)
    message = reload(db, Message, sent.id)
    assert (message.status, message.provider_id) == ("delivered", "0C0000000000AAAA")
    assert message.sent_at is not None
    assert reload(db, Subscriber, sent.subscriber_id).sent_count == 1


def test_a_row_without_a_client_ref_is_found_by_its_own_id(client, db, sent):
    """Campaign and automation rows store no client_ref; the sender sends m<id>, and only such a row answers to it."""
    sent.status, sent.provider_id, sent.client_ref = "unknown", None, None
    db.commit()
    response = post(client, receipt("delivered", message_id="0C0000000000CCCC", client_ref=f"m{sent.id}"))
    assert response.status_code == 204
    assert reload(db, Message, sent.id).status == "delivered"
    other = Message(shop_id=sent.shop_id, kind="reply", to_phone=PHONE, body="hi", status="unknown",
                    client_ref="t-help")
    db.add(other)
    db.commit()
    # m<id> of a row that carries a client_ref of its own is not that row's.
    response = post(client, receipt("delivered", message_id="0C0000000000DDDD", client_ref=f"m{other.id}"))
    assert response.status_code == 204
    assert reload(db, Message, other.id).status == "unknown"


def test_a_later_part_of_a_long_text_is_matched_by_client_ref(client, db, sent):
    post(client, receipt("delivered"))
    post(client, receipt("failed", message_id="0B00000012345679", client_ref=sent.client_ref, err="8"))
    message = reload(db, Message, sent.id)
    assert (message.status, message.error_code, message.provider_id) == ("failed", "dlr-8", "0B00000012345678")


def test_receipt_before_the_send_is_recorded_is_retried(client, db, sent):
    from kinnekt.sms.tasks import process_receipt
    data = receipt("delivered", message_id="0D0000000000BBBB", client_ref="m999999")
    assert post(client, data).status_code == 204
    assert reload(db, Message, sent.id).status == "sent"
    sent.client_ref = "m999999"  # now the send is recorded
    db.commit()
    assert process_receipt(data, 2) == "delivered"
    assert process_receipt(receipt("delivered", message_id="nope"), 3) == "no message"


@pytest.mark.parametrize("data", [
    {"messageId": "0B00000012345678"},                                   # no status
    receipt("teleported"),
    receipt(message_id=""),                                              # neither id nor client-ref
    receipt(err="x1"),
    receipt(price="free"),
    receipt(price="-1"),
    receipt(message_id="x" * 65),
])
def test_malformed_receipts_are_400_and_change_nothing(client, db, sent, data):
    assert post(client, data).status_code == 400
    assert reload(db, Message, sent.id).status == "sent"


def test_signed_receipts(app, client, db, sent, monkeypatch):
    monkeypatch.setitem(app.config, "VONAGE_SIGNATURE_SECRET", "sig-secret")
    monkeypatch.setitem(app.config, "VONAGE_SIGNATURE_METHOD", "sha512")
    data = {**receipt(), "timestamp": str(int(time.time())), "nonce": "r-1"}
    bad = {**data, "sig": "f" * 128, "nonce": "r-2"}
    assert post(client, bad, "json").status_code == 401
    assert reload(db, Message, sent.id).status == "sent"
    data["sig"] = signatures.sign(data, "sig-secret", "sha512")
    assert post(client, data, "json").status_code == 204
    assert reload(db, Message, sent.id).status == "delivered"


def test_end_to_end_send_then_receipt(client, db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = optin.subscribe(db(), shop, PHONE, source="manual", consent_text="x")
    message = queue_message(db(), shop, sub, "hello", kind="reply")
    assert get_queue().drain(20)
    message = reload(db, Message, message.id)
    assert message.status == "sent"
    post(client, receipt("delivered", message_id=message.provider_id, client_ref=message.client_ref,
                         price="0.04000000"))
    message = reload(db, Message, message.id)
    assert message.status == "delivered" and message.price == Decimal("0.0333")  # the send's price is kept
    assert reload(db, Subscriber, sub.id).sent_count == 1
