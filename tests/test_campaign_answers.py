"""The provider's answers on a campaign's rows (kinnekt/campaigns/answers.py): an accepted answer is written one way
(`answers.write`), whoever writes it, and a receipt that got there first keeps its status.

The sender's own paths (the answer riding on the next move on SQLite, the answers connection and its writer thread
on PostgreSQL) are exercised end to end in test_campaign_sending.py; here `record` writes an accepted answer
through the session, as the sender does under a rate limit or for an automation on SQLite.
"""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import update

from kinnekt.campaigns import answers
from kinnekt.db import utcnow
from kinnekt.models import Message, Subscriber
from kinnekt.sms.gateway import SendResult
from tests.test_campaign_sending import _started, rows


def _one_sending_row(db, shop, jobs_fixture, receipt: str | None) -> Message:
    """A started campaign's only row, moved to "sending" (and then to `receipt`'s status, as a receipt that
    overtook the answer would)."""
    row = _started(db, shop, 1, jobs_fixture)
    [message] = rows(db, row)
    db.execute(update(Message).where(Message.id == message.id).values(status="sending", claim_token=None))
    if receipt is not None:
        db.execute(update(Message).where(Message.id == message.id).values(status=receipt))
    db.commit()
    return message


@pytest.mark.parametrize("receipt", [None, "delivered", "failed"])
def test_an_accepted_answer_recorded_through_the_session_is_written_as_every_accepted_answer(
        db, shop_us, jobs, receipt):
    message = _one_sending_row(db, shop_us, jobs, receipt)
    before = utcnow()
    result = SendResult(provider_id="ANSWER1", status="sent", price=Decimal("0.0079"))
    assert answers.record(db, message, result, attempts=1) == "sent"
    db.expire_all()
    message = db.get(Message, message.id)
    subscriber = db.get(Subscriber, message.subscriber_id)
    assert (message.status, message.provider_id, message.price) == (receipt or "sent", "ANSWER1", Decimal("0.0079"))
    assert subscriber.sent_count == 1  # accepted: counted, whatever a receipt said
    if receipt is None:
        assert message.sent_at >= before and (message.error_code, message.error_reason) == (None, None)
        assert subscriber.last_received_at == message.sent_at
    elif receipt == "delivered":
        assert subscriber.last_received_at >= before
    else:  # a failed receipt keeps the message out of last_received_at
        assert subscriber.last_received_at is None


def test_an_answer_that_is_not_accepted_moves_only_a_sending_row(db, shop_us, jobs):
    """A refusal fails a "sending" row; on a row a receipt already moved, only its id and price are written."""
    message = _one_sending_row(db, shop_us, jobs, None)
    refused = SendResult(provider_id="ANSWER2", status="failed", error_code="7", error_text="number barred")
    assert answers.record(db, message, refused, attempts=1) == "failed"
    db.expire_all()
    failed = db.get(Message, message.id)
    assert (failed.status, failed.error_code, failed.provider_id) == ("failed", "7", "ANSWER2")
    assert db.get(Subscriber, failed.subscriber_id).sent_count == 0
    db.execute(update(Message).where(Message.id == message.id).values(status="delivered", provider_id=None))
    db.commit()
    assert answers.record(db, message, refused, attempts=1) == "failed"
    db.expire_all()
    kept = db.get(Message, message.id)
    assert (kept.status, kept.provider_id) == ("delivered", "ANSWER2")
