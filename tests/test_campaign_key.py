"""The messages -> campaigns key: a declared foreign key on SQLite, triggers checking whole statements on
PostgreSQL (kinnekt/models/campaign_key.py). The same rule either way, proved on both databases."""
from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from kinnekt.db import engine, utcnow
from kinnekt.models import Campaign, Link, Message, Shop
from tests.factories import message
from tests.test_campaign_links import campaign, recipient

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")


def _rows(campaign_id, shop_id, subscribers, n=None):
    return [{"shop_id": shop_id, "campaign_id": campaign_id, "subscriber_id": s.id, "kind": "campaign",
             "to_phone": s.phone, "status": "pending", "attempts": 0, "created_at": utcnow(),
             "updated_at": utcnow()} for s in subscribers[:n]]


def _count(db, **where):
    return db.scalar(select(func.count()).select_from(Message).filter_by(**where))


def test_a_statement_naming_a_missing_campaign_is_refused_whole_and_saves_nothing(db, shop):
    camp = campaign(db, shop)
    people = [recipient(db, shop) for _ in range(3)]
    rows = _rows(camp.id, shop.id, people, 2) + _rows(camp.id + 1000, shop.id, people[2:])
    with pytest.raises(IntegrityError):
        db.execute(insert(Message).values(rows))
    db.rollback()
    assert _count(db) == 0
    db.execute(insert(Message).values(_rows(camp.id, shop.id, people)))  # all of them valid: saved
    db.commit()
    assert _count(db, campaign_id=camp.id) == 3


def test_a_message_filed_under_another_shop_than_its_campaigns_is_refused(db, shop, other_shop):
    camp = campaign(db, shop)
    person = recipient(db, shop)
    with pytest.raises(IntegrityError):
        db.execute(insert(Message).values(_rows(camp.id, other_shop.id, [person])))
    db.rollback()
    assert _count(db) == 0


def test_moving_a_message_to_a_missing_campaign_is_refused(db, shop):
    camp = campaign(db, shop)
    row = message(db, camp, recipient(db, shop), status="pending")
    with pytest.raises(IntegrityError):
        db.execute(update(Message).where(Message.id == row.id).values(campaign_id=camp.id + 1000))
    db.rollback()
    assert db.scalar(select(Message.campaign_id).where(Message.id == row.id)) == camp.id


def test_moving_a_message_to_another_shop_is_refused(db, shop, other_shop):
    camp = campaign(db, shop)
    row = message(db, camp, recipient(db, shop), status="pending")
    with pytest.raises(IntegrityError):
        db.execute(update(Message).where(Message.id == row.id).values(shop_id=other_shop.id))
    db.rollback()
    assert db.scalar(select(Message.shop_id).where(Message.id == row.id)) == shop.id


def test_a_snapshot_naming_a_campaign_no_longer_in_its_shop_is_refused_and_saves_nothing(db, shop, other_shop):
    """The snapshot's INSERT ... SELECT ... ON CONFLICT DO NOTHING goes through the same check: here the
    campaign row moved to another shop (nothing named it yet) after the snapshot read it."""
    from kinnekt.campaigns import audience
    from tests.test_campaign_audience import campaign as campaign_for, segment, subscriber
    for _ in range(3):
        subscriber(db, shop)
    camp = campaign_for(db, shop, [segment(db, shop, "US", ["US"])], status="in_progress")
    with engine().begin() as other:
        other.execute(update(Campaign).where(Campaign.id == camp.id).values(shop_id=other_shop.id))
    with pytest.raises(IntegrityError):
        audience.snapshot(db, camp, now=utcnow())
    db.rollback()
    assert _count(db) == 0


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite has no TRUNCATE")
def test_truncating_campaigns_deletes_their_messages_and_keeps_the_others(db, shop):
    camp = campaign(db, shop)
    person = recipient(db, shop)
    message(db, camp, person, status="sent")
    db.execute(insert(Message).values(_rows(None, shop.id, [person])))
    db.commit()
    db.execute(text("TRUNCATE campaigns CASCADE"))
    db.commit()
    assert db.scalars(select(Message.campaign_id)).all() == [None]


def test_messages_without_a_campaign_need_none(db, shop):
    person = recipient(db, shop)
    db.execute(insert(Message).values(_rows(None, shop.id, [person])))
    db.commit()
    assert _count(db, campaign_id=None) == 1


def test_deleting_a_campaign_deletes_its_messages_and_their_links_only(db, shop):
    from kinnekt.campaigns import links
    doomed, kept = campaign(db, shop, name="Doomed"), campaign(db, shop, name="Kept")
    person = recipient(db, shop)
    gone, stays = message(db, doomed, person, status="sent"), message(db, kept, person, status="sent")
    links.rewrite(db, shop, gone, "https://alpha.example/a")
    links.rewrite(db, shop, stays, "https://alpha.example/b")
    db.commit()
    db.execute(delete(Campaign).where(Campaign.id == doomed.id))
    db.commit()
    assert db.scalars(select(Message.campaign_id)).all() == [kept.id]
    assert db.scalars(select(Link.message_id)).all() == [stays.id]


def test_deleting_a_shop_deletes_its_campaigns_messages(db, shop, other_shop):
    camp, theirs = campaign(db, shop), campaign(db, other_shop)
    message(db, camp, recipient(db, shop), status="sent")
    message(db, theirs, recipient(db, other_shop), status="sent")
    db.execute(delete(Shop).where(Shop.id == shop.id))
    db.commit()
    assert db.scalars(select(Message.campaign_id)).all() == [theirs.id]


def test_a_campaign_named_by_messages_cannot_change_its_id_or_shop(db, shop, other_shop):
    camp = campaign(db, shop)
    message(db, camp, recipient(db, shop), status="pending")
    with pytest.raises(IntegrityError):
        db.execute(update(Campaign).where(Campaign.id == camp.id).values(shop_id=other_shop.id))
    db.rollback()
    assert db.scalar(select(Campaign.shop_id).where(Campaign.id == camp.id)) == shop.id


def _waits_for_the_commit(work, transaction) -> None:
    """Run `work` in a thread: it must still be waiting half a second later, and finish once `transaction`
    (another connection's) commits."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()
    transaction.commit()
    transaction.connection.close()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_a_campaign_deletion_waits_for_an_uncommitted_snapshot_then_deletes_what_it_wrote(db, shop):
    """As with a declared key: the snapshot's statement locks its campaign, so a deletion that comes while
    its transaction is open waits for the commit, then deletes every message the snapshot wrote."""
    camp = campaign(db, shop)
    people = [recipient(db, shop) for _ in range(5)]
    snapshot = engine().connect()
    transaction = snapshot.begin()
    snapshot.execute(insert(Message).values(_rows(camp.id, shop.id, people)))
    outcome = {}

    def delete_campaign():
        with engine().connect() as other:
            other.execute(text("SET LOCAL lock_timeout = '5s'"))
            try:
                other.execute(delete(Campaign).where(Campaign.id == camp.id))
                other.commit()
                outcome["deleted"] = True
            except OperationalError as exc:  # pragma: no cover - only if the lock were never released
                outcome["error"] = str(exc)

    _waits_for_the_commit(delete_campaign, transaction)  # on the snapshot's lock on the campaign
    assert outcome == {"deleted": True}
    db.expire_all()
    assert _count(db) == 0


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_a_snapshot_after_an_uncommitted_deletion_waits_then_is_refused(db, shop):
    camp = campaign(db, shop)
    people = [recipient(db, shop) for _ in range(3)]
    deleter = engine().connect()
    transaction = deleter.begin()
    deleter.execute(delete(Campaign).where(Campaign.id == camp.id))
    outcome = {}

    def snapshot():
        with engine().connect() as other:
            try:
                other.execute(insert(Message).values(_rows(camp.id, shop.id, people)))
                other.commit()
                outcome["saved"] = True
            except IntegrityError:
                outcome["refused"] = True

    _waits_for_the_commit(snapshot, transaction)  # its check waits for the deletion's transaction
    assert outcome == {"refused": True}
    db.expire_all()
    assert _count(db) == 0
