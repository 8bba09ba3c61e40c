"""Answers remembered per process until their rows change in any process (kinnekt/shared_cache.py): which of a
shop's segments have browsing rules (asked by every batch of storefront events with subscribers and every browsing
re-check) and whether a shop has a flow on (asked by every re-check). Through the real Redis queue, as deployed;
a second process is played by a cache this process does not know of (its answers are never forgotten here, so
only Redis can tell it of a change)."""
from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from sqlalchemy import update

from kinnekt import shared_cache
from kinnekt.db import utcnow
from kinnekt.flows import engine as flow_engine, service as flow_service
from kinnekt.models import Segment
from kinnekt.segments import membership
from tests import factories
from tests.conftest import make_shop
from tests.factories import rule, where

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")
VISITED = where({"field": "event", "event": "visited", "op": "performed"})
US = where(rule("country", "eq", "US"))


@pytest.fixture
def redis_queue(app, monkeypatch):
    """The app's queue (and so the generations) in Redis, under this test's own name."""
    from kinnekt import queue as kqueue
    real = kqueue.RQJobQueue(REDIS_URL, f"test-shared-cache-{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(app.extensions, "kinnekt_queue", real)
    monkeypatch.setattr(kqueue, "_queue", real)
    shared_cache.reset_local()
    yield real
    shared_cache.reset_local()
    for key in real.redis.scan_iter(match=f"kinnekt:generation:{real.name}:*"):
        real.redis.delete(key)
    for lane in real.lanes.values():
        for job_id in lane.scheduled_job_registry.get_job_ids():
            lane.scheduled_job_registry.remove(job_id, delete_job=True)
        lane.empty()


@pytest.fixture
def reads(monkeypatch):
    """How many times the database was asked which segments have browsing rules, and whether a flow is on."""
    counts = {"segments": 0, "flows": 0}
    real_segments = membership.browsing_segments

    def browsing_segments(session, shop_id):
        counts["segments"] += 1
        return real_segments(session, shop_id)

    monkeypatch.setattr(membership, "browsing_segments", browsing_segments)
    real_flows = flow_engine.read_any_flow_on

    def read_any_flow_on(session, shop_id):
        counts["flows"] += 1
        return real_flows(session, shop_id)

    monkeypatch.setattr(flow_engine, "read_any_flow_on", read_any_flow_on)
    return counts


def other_process(name: str) -> shared_cache.SharedCache:
    """A cache of `name` as another process holds it: nothing in this process forgets its answers."""
    cache = shared_cache.SharedCache(name)
    shared_cache._caches[name].remove(cache)
    return cache


def test_browsing_segments_are_read_once_until_a_definition_of_the_shop_changes(db, shop, redis_queue, reads):
    plain = factories.segment(db, shop, US, kind="manual")
    assert membership.browsing_segments_cached(db, shop.id) == ()
    assert membership.browsing_segments_cached(db, shop.id) == ()
    assert reads["segments"] == 1
    browsing = factories.segment(db, shop, VISITED, kind="manual")  # a new segment with a browsing rule
    assert membership.browsing_segments_cached(db, shop.id) == (browsing.id,)
    plain.name = "Renamed"  # not a definition: nothing to read again
    db.commit()
    assert membership.browsing_segments_cached(db, shop.id) == (browsing.id,)
    assert reads["segments"] == 2
    plain.definition = where(rule("segment", "in", browsing.id))  # now leads to a browsing segment
    db.commit()
    assert membership.browsing_segments_cached(db, shop.id) == tuple(sorted([plain.id, browsing.id]))
    db.delete(browsing)
    plain.definition = US
    db.commit()
    assert membership.browsing_segments_cached(db, shop.id) == ()
    assert reads["segments"] == 4


def test_an_edit_committed_in_one_process_is_seen_by_the_next_question_in_another(db, shop, redis_queue):
    elsewhere = other_process("segment-definitions")
    asked = []

    def read():
        asked.append(1)
        return tuple(membership.browsing_segments(db, shop.id))

    assert elsewhere.get(shop.id, read) == ()
    assert elsewhere.get(shop.id, read) == () and len(asked) == 1  # remembered there
    other_shop = make_shop("other.myshopify.com")
    factories.segment(db, other_shop, VISITED, kind="manual")  # another shop's edit: not this shop's answer
    assert elsewhere.get(shop.id, read) == () and len(asked) == 1
    browsing = factories.segment(db, shop, VISITED, kind="manual")  # committed here: Redis tells the other
    assert elsewhere.get(shop.id, read) == (browsing.id,) and len(asked) == 2


def test_a_rolled_back_change_moves_nothing_and_a_savepoint_waits_for_the_commit(db, shop, redis_queue):
    def now():
        return shared_cache.generation("segment-definitions", shop.id)

    start = now()
    factories.segment(db, shop, VISITED, kind="manual", commit=False)
    db.flush()
    db.rollback()
    assert now() == start
    with db.begin_nested():
        factories.segment(db, shop, VISITED, kind="manual", commit=False)
    assert now() == start  # the savepoint is released, the change not committed: other processes cannot read it
    db.commit()
    assert now() != start


def test_an_update_statement_of_definitions_moves_every_shops_generation(db, shop, redis_queue):
    row = factories.segment(db, shop, US, kind="manual")
    start = shared_cache.generation("segment-definitions", shop.id)
    db.execute(update(Segment).where(Segment.id == row.id).values(name="Statement"))
    db.commit()
    assert shared_cache.generation("segment-definitions", shop.id) == start  # no definition set
    db.execute(update(Segment).where(Segment.id == row.id).values(definition=VISITED))
    db.commit()
    prefix, every, one = shared_cache.generation("segment-definitions", shop.id)
    assert every == start[1] + 1 and one == start[2]
    assert membership.browsing_segments_cached(db, shop.id) == (row.id,)


def test_whether_a_flow_is_on_follows_switching_it_at_once(db, shop, redis_queue, reads):
    elsewhere = other_process("flow-status")
    assert flow_engine.any_flow_on(db, shop.id) is False
    assert flow_engine.any_flow_on(db, shop.id) is False and reads["flows"] == 1
    flow = flow_service.add_builtin(db, shop, "browse_abandonment")  # added switched off
    assert elsewhere.get(shop.id, lambda: flow_engine.read_any_flow_on(db, shop.id)) is False
    flow_service.set_status(db, flow, True, now=utcnow() - dt.timedelta(seconds=1))
    assert flow_engine.any_flow_on(db, shop.id) is True
    assert elsewhere.get(shop.id, lambda: flow_engine.read_any_flow_on(db, shop.id)) is True
    flow_service.set_status(db, flow, False)
    assert flow_engine.any_flow_on(db, shop.id) is False
    assert elsewhere.get(shop.id, lambda: flow_engine.read_any_flow_on(db, shop.id)) is False


def test_without_redis_every_question_reads_the_database(db, shop, app, monkeypatch, reads):
    factories.segment(db, shop, VISITED, kind="manual")
    for _ in range(3):
        assert len(membership.browsing_segments_cached(db, shop.id)) == 1
    assert reads["segments"] == 3  # the in-process queue: nothing is remembered
    from kinnekt import queue as kqueue
    dead = kqueue.RQJobQueue("redis://127.0.0.1:1/0", "nowhere")
    monkeypatch.setitem(app.extensions, "kinnekt_queue", dead)
    for _ in range(2):
        assert len(membership.browsing_segments_cached(db, shop.id)) == 1  # Redis unreachable: no error, no memory
    assert reads["segments"] == 5
