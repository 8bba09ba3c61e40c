"""Materialised membership: builds, re-checks and the sweep change members and log the right enters and leaves.

Runs on SQLite and PostgreSQL alike; `now` is always injected. The helpers at the top are shared by
the other segment test modules.
"""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Customer, Segment, SegmentEvent, SegmentMember
from kinnekt.queue import get_queue
from kinnekt.segments import membership
from kinnekt.segments.compiler import members
from kinnekt.segments.rules import has_relative_time, normalise
from tests import factories
from tests.conftest import make_shop
from tests.factories import buyer, rule, subscriber, where

pytestmark = pytest.mark.usefixtures("finished_jobs")

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- helpers

def segment(db, shop, definition, *, name=None, kind="manual") -> Segment:
    """A stored segment (not built) with the normalised definition and its sweep flag; committed."""
    definition = normalise(definition)
    return factories.segment(db, shop, definition, name=name, kind=kind,
                             has_relative_time=has_relative_time(definition, session=db, shop_id=shop.id))


SPENT_OVER_25 = where(rule("money_spent", "gt", 25))
RECENT_BUYERS = where(rule("last_order_created", "eq", "last_30_days"), rule("money_spent", "gt", 25))


def member_ids(db, seg) -> set[int]:
    return set(db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == seg.id)))


def events(db, seg=None, **filters) -> list[tuple[int, str, str]]:
    """(subscriber_id, kind, cause) of the log, in order, for one segment (or all)."""
    query = select(SegmentEvent.subscriber_id, SegmentEvent.kind, SegmentEvent.cause).order_by(SegmentEvent.id)
    if seg is not None:
        query = query.where(SegmentEvent.segment_id == seg.id)
    for key, value in filters.items():
        query = query.where(getattr(SegmentEvent, key) == value)
    return [tuple(r) for r in db.execute(query)]


def assert_consistent(db, seg, shop, now):
    """Members equal the compiler's answer, member_count matches, and replaying the log gives the members."""
    db.expire_all()
    expected = set(members(db, seg.definition, shop=shop, now=now))
    assert member_ids(db, seg) == expected
    assert db.get(Segment, seg.id).member_count == len(expected)
    replay: set[int] = set()
    for subscriber_id, kind, _cause in events(db, seg):
        if kind == "enter":
            assert subscriber_id not in replay, "entered twice without leaving"
            replay.add(subscriber_id)
        else:
            assert subscriber_id in replay, "left without being in"
            replay.remove(subscriber_id)
    assert replay == expected


# ---------------------------------------------------------------------------------------------- build

def test_build_enters_members_and_records_the_build(db, shop):
    big, _ = buyer(db, shop, money_spent=Decimal("40"), orders_count=1)
    small, _ = buyer(db, shop, money_spent=Decimal("25"), orders_count=1)  # not over 25
    subscriber(db, shop)  # unlinked: spent 0
    buyer(db, shop, money_spent=Decimal("99"))[0].status = "unsubscribed"
    db.commit()
    seg = segment(db, shop, SPENT_OVER_25)

    result = membership.build(db, seg.id, now=NOW)

    assert (result.entered, result.left, result.member_count) == (1, 0, 1)
    assert member_ids(db, seg) == {big.id}
    assert events(db, seg) == [(big.id, "enter", "build")]
    stored = db.get(Segment, seg.id)
    assert (stored.member_count, stored.build_status, stored.last_built_at) == (1, "done", NOW)
    assert stored.build_ms is not None and stored.build_ms >= 0
    entered_at = db.scalar(select(SegmentMember.entered_at).where(SegmentMember.segment_id == seg.id))
    assert entered_at == NOW
    assert small.id not in member_ids(db, seg)


def test_rebuild_logs_only_the_difference(db, shop):
    stay, _ = buyer(db, shop, money_spent=Decimal("30"))
    go, go_customer = buyer(db, shop, money_spent=Decimal("30"))
    come, come_customer = buyer(db, shop, money_spent=Decimal("10"))
    seg = segment(db, shop, SPENT_OVER_25)
    membership.build(db, seg.id, now=NOW)
    go_customer.money_spent = Decimal("5")
    come_customer.money_spent = Decimal("26")
    db.commit()

    result = membership.build(db, seg.id, now=NOW + dt.timedelta(hours=1), cause="edit")

    assert (result.entered, result.left, result.member_count) == (1, 1, 2)
    assert member_ids(db, seg) == {stay.id, come.id}
    assert events(db, seg, cause="edit") == [(go.id, "leave", "edit"), (come.id, "enter", "edit")]
    # A third build with nothing changed logs nothing.
    assert membership.build(db, seg.id, now=NOW + dt.timedelta(hours=2)).entered == 0
    assert len(events(db, seg)) == 4
    assert_consistent(db, seg, shop, NOW)


def test_build_updates_objects_already_loaded_in_the_session(db, shop):
    buyer(db, shop, money_spent=Decimal("30"))
    seg = segment(db, shop, SPENT_OVER_25)
    assert seg.member_count == 0
    membership.build(db, seg.id, now=NOW)
    assert (seg.member_count, seg.build_status) == (1, "done")


def test_build_of_a_deleted_segment_does_nothing(db, shop):
    assert membership.build(db, 987654, now=NOW) is None


def test_a_failing_build_is_marked_failed_and_keeps_the_members(db, shop):
    member, _ = buyer(db, shop, money_spent=Decimal("30"))
    seg = segment(db, shop, SPENT_OVER_25)
    membership.build(db, seg.id, now=NOW)
    seg.definition = {"match": "all", "rules": [{"field": "no_such_field", "op": "eq", "value": 1}]}
    db.commit()
    with pytest.raises(ValueError):
        membership.build(db, seg.id, now=NOW)
    db.expire_all()
    assert db.get(Segment, seg.id).build_status == "failed"
    assert member_ids(db, seg) == {member.id}
    assert len(events(db, seg)) == 1


def test_unknown_cause_and_naive_now_are_refused(db, shop):
    seg = segment(db, shop, SPENT_OVER_25)
    with pytest.raises(ValueError):
        membership.build(db, seg.id, now=NOW, cause="whim")
    with pytest.raises(ValueError):
        membership.build(db, seg.id, now=NOW.replace(tzinfo=None))


def test_auto_definitions_build_with_the_same_compiler(db, shop):
    popup = subscriber(db, shop, source="mobile_popup")
    keyword = subscriber(db, shop, source="keyword", keyword="SALE")
    everyone = segment(db, shop, where(rule("subscription_source", "eq", "all")), kind="auto")
    popups = segment(db, shop, where(rule("subscription_source", "eq", "mobile_popup")), kind="auto")
    sale = segment(db, shop, where(rule("keyword", "eq", "sale")), kind="auto")
    for seg in (everyone, popups, sale):
        membership.build(db, seg.id, now=NOW)
    assert member_ids(db, everyone) == {popup.id, keyword.id}
    assert member_ids(db, popups) == {popup.id}
    assert member_ids(db, sale) == {keyword.id}


# ---------------------------------------------------------------------------------------------- recheck

def test_recheck_moves_one_subscriber_across_all_segments_of_the_shop(db, shop):
    changed, person = buyer(db, shop, money_spent=Decimal("10"), orders_count=1,
                            last_order_at=NOW - dt.timedelta(days=100))
    bystander, _ = buyer(db, shop, money_spent=Decimal("50"), orders_count=1,
                         last_order_at=NOW - dt.timedelta(days=2))
    spent = segment(db, shop, SPENT_OVER_25)
    recent = segment(db, shop, RECENT_BUYERS)
    one_order = segment(db, shop, where(rule("number_of_orders", "eq", 1)))
    for seg in (spent, recent, one_order):
        membership.build(db, seg.id, now=NOW)
    assert member_ids(db, one_order) == {changed.id, bystander.id}

    # A new order arrives: spend 10 -> 45, two orders, the last one today.
    person.money_spent, person.orders_count, person.last_order_at = Decimal("45"), 2, NOW - dt.timedelta(hours=1)
    db.commit()
    changes = membership.recheck(db, shop.id, [changed.id], now=NOW)

    assert changes == sorted([(spent.id, changed.id, "enter"), (recent.id, changed.id, "enter"),
                              (one_order.id, changed.id, "leave")])
    assert events(db, cause="recheck") == [(changed.id, "leave", "recheck"), (changed.id, "enter", "recheck"),
                                           (changed.id, "enter", "recheck")]
    for seg in (spent, recent, one_order):
        assert_consistent(db, seg, shop, NOW)
    assert membership.recheck(db, shop.id, [changed.id], now=NOW) == []  # nothing new: nothing logged


def test_recheck_of_an_unsubscribed_subscriber_leaves_every_segment(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"))
    segs = [segment(db, shop, SPENT_OVER_25), segment(db, shop, where(rule("subscription_source", "eq", "all")))]
    for seg in segs:
        membership.build(db, seg.id, now=NOW)
    sub.status = "unsubscribed"
    db.commit()
    assert membership.recheck(db, shop.id, [sub.id], now=NOW) == [(segs[0].id, sub.id, "leave"),
                                                                  (segs[1].id, sub.id, "leave")]
    assert all(db.get(Segment, s.id).member_count == 0 for s in segs)


def test_recheck_follows_segment_rules_through_other_definitions(db, shop):
    sub, person = buyer(db, shop, money_spent=Decimal("10"))
    spenders = segment(db, shop, SPENT_OVER_25)
    inner = segment(db, shop, where(rule("segment", "in", spenders.id)))
    outside = segment(db, shop, where(rule("segment", "not_in", spenders.id)))
    for seg in (spenders, inner, outside):
        membership.build(db, seg.id, now=NOW)
    assert member_ids(db, outside) == {sub.id}
    person.money_spent = Decimal("100")
    db.commit()
    changes = membership.recheck(db, shop.id, [sub.id], now=NOW)
    assert changes == sorted([(spenders.id, sub.id, "enter"), (inner.id, sub.id, "enter"),
                              (outside.id, sub.id, "leave")])


def test_recheck_skips_a_segment_that_no_longer_compiles(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"))
    good = segment(db, shop, SPENT_OVER_25)
    broken = segment(db, shop, SPENT_OVER_25)
    broken.definition = {"match": "all", "rules": [{"field": "gone", "op": "eq", "value": 1}]}
    db.commit()
    assert membership.recheck(db, shop.id, [sub.id], now=NOW) == [(good.id, sub.id, "enter")]
    assert member_ids(db, broken) == set()


def test_recheck_with_no_ids_or_no_shop_changes_nothing(db, shop):
    segment(db, shop, SPENT_OVER_25)
    assert membership.recheck(db, shop.id, [], now=NOW) == []
    assert membership.recheck(db, 987654, [1], now=NOW) == []


def test_recheck_of_many_subscribers_in_chunks(db, shop, monkeypatch):
    monkeypatch.setattr("kinnekt.defaults.SEGMENT_RECHECK_CHUNK", 3)
    monkeypatch.setattr("kinnekt.defaults.SEGMENT_RECHECK_SEGMENTS_PER_QUERY", 2)
    subs = [buyer(db, shop, money_spent=Decimal(10 * i))[0] for i in range(8)]
    segs = [segment(db, shop, where(rule("money_spent", "gt", limit))) for limit in (15, 35, 55)]
    changes = membership.recheck(db, shop.id, [s.id for s in subs], now=NOW)
    assert len(changes) == 6 + 4 + 2
    for seg in segs:
        assert_consistent(db, seg, shop, NOW)


# ---------------------------------------------------------------------------------------------- sweep

def test_the_time_sweep_moves_a_subscriber_out_when_30_days_pass_without_an_order(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("80"), orders_count=1, last_order_at=NOW - dt.timedelta(days=10))
    recent = segment(db, shop, RECENT_BUYERS)
    timeless = segment(db, shop, SPENT_OVER_25)
    assert recent.has_relative_time and not timeless.has_relative_time
    assert membership.sweep(db, now=NOW) == 1
    assert member_ids(db, recent) == {sub.id}
    assert db.get(Segment, timeless.id).last_built_at is None  # the sweep leaves timeless segments alone

    later = NOW + dt.timedelta(days=19)  # the order is 29 days old: still in the last 30 days
    membership.sweep(db, now=later)
    assert member_ids(db, recent) == {sub.id}

    later = NOW + dt.timedelta(days=21)  # 31 days, nothing happened meanwhile
    assert membership.sweep(db, now=later) == 1
    assert member_ids(db, recent) == set()
    assert events(db, recent) == [(sub.id, "enter", "sweep"), (sub.id, "leave", "sweep")]
    db.expire_all()
    assert db.get(Segment, recent.id).last_built_at == later


def test_sweep_skips_uninstalled_shops_and_goes_on_after_a_failure(db, shop):
    gone = make_shop("gone.myshopify.com", uninstalled_at=NOW)
    buyer(db, gone, money_spent=Decimal("80"), last_order_at=NOW - dt.timedelta(days=1))
    segment(db, gone, RECENT_BUYERS)
    broken = segment(db, shop, RECENT_BUYERS)
    broken.definition = {"match": "all", "rules": [{"field": "gone", "op": "eq", "value": 1}]}
    working = segment(db, shop, RECENT_BUYERS)
    db.commit()
    assert membership.segments_to_sweep(db) == [broken.id, working.id]
    assert membership.sweep(db, now=NOW) == 1
    db.expire_all()
    assert db.get(Segment, broken.id).build_status == "failed"
    assert db.get(Segment, working.id).build_status == "done"


# ---------------------------------------------------------------------------------------------- tenants

def test_a_shop_never_sees_another_shops_subscribers(db, shop, other_shop):
    mine, _ = buyer(db, shop, money_spent=Decimal("30"))
    theirs, their_customer = buyer(db, other_shop, money_spent=Decimal("30"))
    my_seg = segment(db, shop, SPENT_OVER_25, name="Spenders")
    their_seg = segment(db, other_shop, SPENT_OVER_25, name="Spenders")
    membership.build(db, my_seg.id, now=NOW)
    membership.build(db, their_seg.id, now=NOW)
    assert member_ids(db, my_seg) == {mine.id}
    assert member_ids(db, their_seg) == {theirs.id}

    # A re-check naming the other shop's subscriber under this shop changes nothing anywhere.
    their_customer.money_spent = Decimal("1")
    db.commit()
    assert membership.recheck(db, shop.id, [theirs.id, mine.id], now=NOW) == []
    assert member_ids(db, their_seg) == {theirs.id}
    assert membership.recheck(db, other_shop.id, [theirs.id], now=NOW) == [(their_seg.id, theirs.id, "leave")]
    assert member_ids(db, my_seg) == {mine.id}
    shops_in_log = set(db.scalars(select(SegmentEvent.shop_id).where(SegmentEvent.segment_id == my_seg.id)))
    assert shops_in_log == {shop.id}


# ---------------------------------------------------------------------------------------------- concurrency

def _in_thread(app, target, *args, name=None):
    """Run target(session, *args) in a thread with its own session; returns (thread, errors)."""
    errors: list[BaseException] = []

    def run():
        with app.app_context():
            try:
                target(Session(), *args)
            except BaseException as exc:  # surfaced by the test
                errors.append(exc)
            finally:
                Session.remove()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, errors


def test_two_builds_at_once_leave_one_correct_member_set(app, db, shop):
    subs = [buyer(db, shop, money_spent=Decimal(30 if i % 3 else 5))[0] for i in range(60)]
    seg = segment(db, shop, SPENT_OVER_25)
    barrier = threading.Barrier(2)

    def build(session):
        barrier.wait(10)
        membership.build(session, seg.id, now=NOW)

    runs = [_in_thread(app, build) for _ in range(2)]
    for thread, errors in runs:
        thread.join(60)
        assert not thread.is_alive() and errors == []
    assert_consistent(db, seg, shop, NOW)
    spenders = sorted(s.id for i, s in enumerate(subs) if i % 3)
    assert sorted(events(db, seg)) == [(s, "enter", "build") for s in spenders]  # each entered once
    assert db.scalar(select(func.count()).select_from(SegmentMember)) == len(spenders) == 40


def test_a_recheck_waits_for_a_running_build_and_the_newer_evaluation_wins(app, db, shop, monkeypatch):
    sub, person = buyer(db, shop, money_spent=Decimal("10"))
    others = [buyer(db, shop, money_spent=Decimal("30"))[0] for _ in range(5)]
    seg = segment(db, shop, SPENT_OVER_25)
    membership.build(db, seg.id, now=NOW)

    order: list[str] = []
    locked, go = threading.Event(), threading.Event()
    original_lock = membership._lock_segments

    def lock_then_pause(session, *conditions):
        rows = original_lock(session, *conditions)
        if threading.current_thread().name == "builder":
            order.append("build locked")
            locked.set()
            go.wait(20)
        return rows

    monkeypatch.setattr(membership, "_lock_segments", lock_then_pause)
    original_compile, original_predicates = membership.compile_definition, membership._predicates

    def recording_compile(definition, **kwargs):  # a build evaluates right after compiling
        order.append(f"{threading.current_thread().name} evaluates")
        return original_compile(definition, **kwargs)

    def recording_predicates(*args):  # a re-check evaluates right after getting its conditions
        order.append(f"{threading.current_thread().name} evaluates")
        return original_predicates(*args)

    monkeypatch.setattr(membership, "compile_definition", recording_compile)
    monkeypatch.setattr(membership, "_predicates", recording_predicates)

    builder, build_errors = _in_thread(app, lambda s: membership.build(s, seg.id, now=NOW), name="builder")
    assert locked.wait(20)
    # The build holds the segment; meanwhile the subscriber's data changes and a re-check starts.
    # (On SQLite the data write has to wait for the build as well, so it is made by the re-checking thread.)

    def change_and_recheck(session):
        session.get(Customer, person.id).money_spent = Decimal("99")
        session.commit()
        membership.recheck(session, shop.id, [sub.id], now=NOW)

    checker, check_errors = _in_thread(app, change_and_recheck, name="checker")
    checker.join(0.5)  # give a re-check that ignored the lock time to run ahead (it must not)
    go.set()
    builder.join(60)
    checker.join(60)
    assert build_errors == [] and check_errors == []
    assert order.index("build locked") < order.index("builder evaluates") < order.index("checker evaluates"), order
    assert member_ids(db, seg) == {sub.id} | {o.id for o in others}
    assert_consistent(db, seg, shop, NOW)


# ---------------------------------------------------------------------------------------------- jobs

def test_subscribers_changed_queues_a_recheck_that_runs_in_the_background(app, db, shop):
    sub, person = buyer(db, shop, money_spent=Decimal("10"))
    seg = segment(db, shop, SPENT_OVER_25)
    membership.build(db, seg.id, now=NOW)
    person.money_spent = Decimal("50")
    db.commit()
    membership.subscribers_changed(shop.id, [sub.id, sub.id])
    membership.subscribers_changed(shop.id, [])  # nothing to do
    assert get_queue().drain(20)
    db.expire_all()
    assert member_ids(db, seg) == {sub.id}
    assert events(db, seg) == [(sub.id, "enter", "recheck")]


def test_request_build_marks_pending_and_builds_the_segment_and_those_referring_to_it(app, db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("50"))
    spenders = segment(db, shop, SPENT_OVER_25)
    referring = segment(db, shop, where(rule("segment", "in", spenders.id)))
    unrelated = segment(db, shop, where(rule("number_of_orders", "gt", 5)))
    assert membership.dependent_segments(db, shop.id, spenders.id) == [referring.id]

    membership.request_build(spenders, cause="edit")
    assert get_queue().drain(20)
    db.expire_all()
    assert member_ids(db, spenders) == member_ids(db, referring) == {sub.id}
    assert events(db, spenders) == [(sub.id, "enter", "edit")]
    assert db.get(Segment, spenders.id).build_status == "done"
    assert db.get(Segment, unrelated.id).build_status == "pending"  # not built: nothing changed for it


def test_the_worker_jobs_build_recheck_and_sweep(app, db, shop):
    from kinnekt.segments.tasks import build_segment, recheck_subscribers, requeue_unbuilt_segments, sweep_segments
    sub, person = buyer(db, shop, money_spent=Decimal("50"), last_order_at=dt.datetime.now(UTC))
    seg = segment(db, shop, RECENT_BUYERS)
    assert build_segment(seg.id) == {"segment_id": seg.id, "entered": 1, "left": 0, "member_count": 1,
                                     "build_ms": db.get(Segment, seg.id).build_ms, "skipped": False}
    person.money_spent = Decimal("1")
    db.commit()
    assert recheck_subscribers(shop.id, [sub.id]) == 1
    assert sweep_segments() == 1  # queued one sweep build
    assert get_queue().drain(20)
    pending = segment(db, shop, SPENT_OVER_25)
    assert pending.build_status == "pending"
    assert requeue_unbuilt_segments() == 1
    assert get_queue().drain(20)
    db.expire_all()
    assert db.get(Segment, pending.id).build_status == "done"
    assert [kind for _, kind, _ in events(db, seg)] == ["enter", "leave"]


def test_recheck_uses_the_definition_stored_now_not_a_remembered_one(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"))
    seg = segment(db, shop, SPENT_OVER_25)
    assert membership.recheck(db, shop.id, [sub.id], now=NOW) == [(seg.id, sub.id, "enter")]
    seg.definition = normalise(where(rule("money_spent", "gt", 50)))
    db.commit()
    assert membership.recheck(db, shop.id, [sub.id], now=NOW) == [(seg.id, sub.id, "leave")]
    shop.timezone = "Europe/Berlin"  # a new time zone is a new key as well
    seg.definition = normalise(SPENT_OVER_25)
    db.commit()
    assert membership.recheck(db, shop.id, [sub.id], now=NOW) == [(seg.id, sub.id, "enter")]


def test_a_requested_build_done_by_another_job_since_is_not_built_again(app, db, shop, monkeypatch):
    """The start-up recovery queues a second build of a segment still pending; when it runs after the first is
    done, people who joined meanwhile must not enter as "build" (which fires no automation): their re-check
    logs them."""
    from kinnekt import queue as kqueue
    from kinnekt.segments.tasks import build_segment
    from tests.helpers import RecordingQueue
    recorder = RecordingQueue()  # the test runs the jobs itself, in the order a busy worker could
    monkeypatch.setitem(app.extensions, "kinnekt_queue", recorder)
    monkeypatch.setattr(kqueue, "_queue", recorder)
    first, _ = buyer(db, shop, money_spent=Decimal("40"))
    seg = segment(db, shop, SPENT_OVER_25)
    membership.request_build(seg, session=db)  # pending; the queued job and a recovery job would both build
    assert build_segment(seg.id, "build")["entered"] == 1
    later, _ = buyer(db, shop, money_spent=Decimal("50"))  # joins before its re-check runs
    again = build_segment(seg.id, "build")
    assert again["skipped"] and again["entered"] == 0
    assert events(db, seg) == [(first.id, "enter", "build")]
    membership.recheck(db, shop.id, [later.id], now=NOW)
    assert events(db, seg) == [(first.id, "enter", "build"), (later.id, "enter", "recheck")]
    assert db.get(Segment, seg.id).build_status == "done"
    # A sweep, or any build asked for again (pending), does evaluate.
    assert build_segment(seg.id, "sweep")["skipped"] is False
    membership.request_build(seg, cause="edit", session=db)
    assert build_segment(seg.id, "edit")["skipped"] is False
