"""The messages -> subscribers key: a message names a subscriber of its own shop, or none; deleting the subscriber
leaves its messages without one. A declared key plus triggers on SQLite, triggers checking whole statements and a
lock per shop on PostgreSQL (kinnekt/models/subscriber_key.py). The same rule either way, proved on both."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from kinnekt.db import engine
from kinnekt.models import Message, Subscriber
from tests.test_campaign_key import ON_POSTGRESQL, _rows, _waits_for_the_commit
from tests.factories import message
from tests.test_campaign_links import campaign, recipient


def _count(db, **where):
    return db.scalar(select(func.count()).select_from(Message).filter_by(**where))


def test_a_statement_naming_a_missing_subscriber_is_refused_whole_and_saves_nothing(db, shop):
    camp = campaign(db, shop)
    people = [recipient(db, shop) for _ in range(3)]
    rows = _rows(camp.id, shop.id, people)
    rows[1]["subscriber_id"] = people[-1].id + 1000
    with pytest.raises(IntegrityError):
        db.execute(insert(Message).values(rows))
    db.rollback()
    assert _count(db) == 0
    db.execute(insert(Message).values(_rows(camp.id, shop.id, people)))  # all of them valid: saved
    db.commit()
    assert _count(db, campaign_id=camp.id) == 3


def test_a_message_naming_another_shops_subscriber_is_refused(db, shop, other_shop):
    theirs = recipient(db, other_shop)
    with pytest.raises(IntegrityError):
        db.execute(insert(Message).values(_rows(None, shop.id, [theirs])))
    db.rollback()
    assert _count(db) == 0


def test_moving_a_message_to_another_shops_subscriber_or_a_missing_one_is_refused(db, shop, other_shop):
    camp = campaign(db, shop)
    mine, theirs = recipient(db, shop), recipient(db, other_shop)
    row = message(db, camp, mine, status="pending")
    for subscriber_id in (theirs.id, theirs.id + 1000):
        with pytest.raises(IntegrityError):
            db.execute(update(Message).where(Message.id == row.id).values(subscriber_id=subscriber_id))
        db.rollback()
    assert db.scalar(select(Message.subscriber_id).where(Message.id == row.id)) == mine.id


def test_messages_without_a_subscriber_need_none(db, shop):
    db.execute(insert(Message).values([{**_rows(None, shop.id, [recipient(db, shop)])[0], "subscriber_id": None}]))
    db.commit()
    assert _count(db, subscriber_id=None) == 1


def test_deleting_a_subscriber_leaves_its_messages_without_one_and_keeps_the_others(db, shop):
    camp = campaign(db, shop)
    gone, stays = recipient(db, shop), recipient(db, shop)
    message(db, camp, gone, status="sent")
    message(db, camp, stays, status="sent")
    db.execute(delete(Subscriber).where(Subscriber.id == gone.id))
    db.commit()
    assert sorted(db.execute(select(Message.subscriber_id, Message.status)).all(),
                  key=lambda row: row.subscriber_id or 0) == [(None, "sent"), (stays.id, "sent")]


def test_a_subscriber_named_by_messages_cannot_move_to_another_shop(db, shop, other_shop):
    person = recipient(db, shop)
    message(db, campaign(db, shop), person, status="pending")
    with pytest.raises(IntegrityError):
        db.execute(update(Subscriber).where(Subscriber.id == person.id).values(shop_id=other_shop.id))
    db.rollback()
    assert db.scalar(select(Subscriber.shop_id).where(Subscriber.id == person.id)) == shop.id


def test_a_subscriber_named_by_no_message_can_move(db, shop, other_shop):
    person = recipient(db, shop)
    db.execute(update(Subscriber).where(Subscriber.id == person.id).values(shop_id=other_shop.id))
    db.commit()
    assert db.scalar(select(Subscriber.shop_id).where(Subscriber.id == person.id)) == other_shop.id


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite has no TRUNCATE")
def test_truncating_subscribers_leaves_every_message_without_one(db, shop):
    message(db, campaign(db, shop), recipient(db, shop), status="sent")
    db.execute(text("TRUNCATE subscribers CASCADE"))
    db.commit()
    assert db.execute(select(Message.subscriber_id, Message.status)).all() == [(None, "sent")]


def _insert_then(db, shop, people, after_insert):
    """Insert messages for `people` in a transaction left open, then run `after_insert(transaction)`."""
    conn = engine().connect()
    transaction = conn.begin()
    conn.execute(insert(Message).values(_rows(None, shop.id, people)))
    after_insert(transaction)


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_a_subscriber_deletion_waits_for_an_uncommitted_insert_then_releases_what_it_wrote(db, shop):
    """As with a declared key: a deletion that comes while an insert naming the subscriber is uncommitted waits
    for its commit (the shop's lock), then leaves the messages it committed without a subscriber."""
    people = [recipient(db, shop) for _ in range(3)]
    outcome = {}

    def delete_subscriber():
        with engine().connect() as other:
            other.execute(text("SET LOCAL lock_timeout = '5s'"))
            other.execute(delete(Subscriber).where(Subscriber.id == people[0].id))
            other.commit()
            outcome["deleted"] = True

    _insert_then(db, shop, people, lambda transaction: _waits_for_the_commit(delete_subscriber, transaction))
    assert outcome == {"deleted": True}
    db.expire_all()
    assert sorted(db.scalars(select(Message.subscriber_id)).all(), key=lambda i: i or 0) == [
        None, people[1].id, people[2].id]


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_an_insert_after_an_uncommitted_subscriber_deletion_waits_then_is_refused(db, shop):
    people = [recipient(db, shop) for _ in range(3)]
    deleter = engine().connect()
    transaction = deleter.begin()
    deleter.execute(delete(Subscriber).where(Subscriber.id == people[1].id))
    outcome = {}

    def insert_messages():
        with engine().connect() as other:
            try:
                other.execute(insert(Message).values(_rows(None, shop.id, people)))
                other.commit()
                outcome["saved"] = True
            except IntegrityError:
                outcome["refused"] = True

    _waits_for_the_commit(insert_messages, transaction)
    assert outcome == {"refused": True}
    db.expire_all()
    assert _count(db) == 0


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_an_insert_waiting_for_a_deletion_that_rolls_back_is_saved(db, shop):
    people = [recipient(db, shop) for _ in range(2)]
    deleter = engine().connect()
    transaction = deleter.begin()
    deleter.execute(delete(Subscriber).where(Subscriber.id == people[0].id))
    outcome = {}

    def insert_messages():
        with engine().connect() as other:
            other.execute(insert(Message).values(_rows(None, shop.id, people)))
            other.commit()
            outcome["saved"] = True

    thread = threading.Thread(target=insert_messages)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # held off by the deletion's lock on the shop
    transaction.rollback()
    deleter.close()
    thread.join(10)
    assert outcome == {"saved": True}
    assert _count(db) == 2


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_a_deletion_in_another_shop_does_not_wait_for_an_insert(db, shop, other_shop):
    """The lock is per shop: one shop's erasure never waits for another shop's campaign."""
    mine, theirs = recipient(db, shop), recipient(db, other_shop)
    mine_id, theirs_id = mine.id, theirs.id

    def after_insert(transaction):
        with engine().connect() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            other.execute(delete(Subscriber).where(Subscriber.id == theirs_id))
            other.commit()
        transaction.commit()
        transaction.connection.close()

    _insert_then(db, shop, [mine], after_insert)
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.id == theirs_id)) == 0
    assert db.scalars(select(Message.subscriber_id)).all() == [mine_id]


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_an_erasure_that_holds_off_inserts_first_does_not_deadlock_with_an_insert_that_updates_its_subscriber(
        db, shop):
    """A transaction inserts a message, then updates its subscriber; an erasure of that subscriber comes in
    between. Having taken the shop's lock before touching any row, the erasure holds no row the insert needs:
    it waits for the insert's commit, then deletes the subscriber and releases the new message."""
    from kinnekt.models.subscriber_key import before_deleting_subscribers
    from kinnekt.db import Session
    person = recipient(db, shop)
    person_id = person.id
    conn = engine().connect()
    transaction = conn.begin()
    conn.execute(insert(Message).values(_rows(None, shop.id, [person])))
    outcome = {}

    def erase():
        session = Session.session_factory()
        try:
            session.execute(text("SET LOCAL lock_timeout = '5s'"))
            before_deleting_subscribers(session, shop.id)
            session.execute(delete(Subscriber).where(Subscriber.id == person_id))
            session.commit()
            outcome["erased"] = True
        finally:
            session.close()

    thread = threading.Thread(target=erase)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # waiting for the shop's lock, holding no subscriber row
    conn.execute(text("SET LOCAL lock_timeout = '2s'"))
    conn.execute(update(Subscriber).where(Subscriber.id == person_id).values(sent_count=Subscriber.sent_count + 1))
    transaction.commit()
    conn.close()
    thread.join(10)
    assert outcome == {"erased": True}
    db.expire_all()
    assert db.scalars(select(Message.subscriber_id)).all() == [None]


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite runs one writer at a time")
def test_an_insert_waiting_for_an_erasure_holds_no_campaign_lock_so_the_erasure_can_delete_the_campaign(db, shop):
    """The subscriber key's trigger fires before the campaign key's: an insert that waits for a shop's erasure
    has not yet locked its campaign, so the erasure deleting that campaign goes through (no deadlock), and the
    insert is then refused."""
    from kinnekt.campaigns.lifecycle import Campaign as CampaignModel
    from kinnekt.models.subscriber_key import before_deleting_subscribers
    from kinnekt.db import Session
    camp = campaign(db, shop)
    camp_id = camp.id
    people = [recipient(db, shop) for _ in range(2)]
    rows = _rows(camp_id, shop.id, people)
    eraser = Session.session_factory()
    before_deleting_subscribers(eraser, shop.id)
    outcome = {}

    def snapshot():
        with engine().connect() as other:
            try:
                other.execute(insert(Message).values(rows))
                other.commit()
                outcome["saved"] = True
            except IntegrityError:
                outcome["refused"] = True

    thread = threading.Thread(target=snapshot)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # waiting for the shop's lock
    eraser.execute(text("SET LOCAL lock_timeout = '3s'"))
    eraser.execute(delete(CampaignModel).where(CampaignModel.id == camp_id))  # would wait for a campaign lock
    eraser.commit()
    eraser.close()
    thread.join(10)
    assert outcome == {"refused": True}
    assert _count(db) == 0
