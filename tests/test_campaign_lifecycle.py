"""The campaign state machine: save, schedule, switch, start (controllable clock), end, delete, fail with a reason."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.campaigns import lifecycle, sending
from kinnekt.campaigns.lifecycle import CampaignError
from kinnekt.models import Campaign, CampaignSegment, Message, Segment
from kinnekt.segments import service
from tests.test_campaign_audience import segment, subscriber

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)


def _values(seg_ids, **changes) -> dict:
    values = {"name": "Spring sale", "body": "Hi {first_name}!", "include_segment_ids": list(seg_ids),
              "exclude_segment_ids": [], "send_now": False, "send_at": NOW + dt.timedelta(hours=2),
              "recipient_local_time": False, "discount_mode": "none", "discount_code": None,
              "discount_kind": None, "discount_value": None}
    values.update(changes)
    return values


def _count(db, campaign_row, status=None) -> int:
    query = select(func.count()).select_from(Message).where(Message.campaign_id == campaign_row.id)
    if status:
        query = query.where(Message.status == status)
    return db.scalar(query)


def test_save_makes_a_draft_and_edits_replace_the_segments(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    canada = segment(db, shop, "Canada", ["CA"])
    draft = lifecycle.save(db, shop, _values([us.id], exclude_segment_ids=[canada.id]))
    assert (draft.status, draft.enabled, draft.name) == ("draft", True, "Spring sale")
    modes = {(cs.segment_id, cs.mode) for cs in db.scalars(select(CampaignSegment))}
    assert modes == {(us.id, "include"), (canada.id, "exclude")}
    lifecycle.save(db, shop, _values([canada.id], name="Canada only"), draft)
    assert {(cs.segment_id, cs.mode) for cs in db.scalars(select(CampaignSegment))} == {(canada.id, "include")}
    assert db.get(Campaign, draft.id).name == "Canada only"
    assert jobs.jobs == []  # a draft queues nothing


def test_schedule_refusals_change_nothing(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    no_segments = lifecycle.save(db, shop, _values([]))
    with pytest.raises(CampaignError, match="at least one segment"):
        lifecycle.schedule(db, no_segments, now=NOW)
    past = lifecycle.save(db, shop, _values([us.id], send_at=NOW - dt.timedelta(minutes=1)))
    with pytest.raises(CampaignError, match="future"):
        lifecycle.schedule(db, past, now=NOW)
    empty = lifecycle.save(db, shop, _values([us.id], body="  "))
    with pytest.raises(CampaignError, match="Write the message"):
        lifecycle.schedule(db, empty, now=NOW)
    db.expire_all()
    assert set(db.scalars(select(Campaign.status))) == {"draft"}
    assert jobs.jobs == []


def test_scheduled_campaign_starts_at_its_time_and_not_before(db, shop, audience_of_three, jobs):
    people, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id]))
    lifecycle.schedule(db, row, now=NOW)
    assert row.status == "scheduled"
    name, args, job_id, when = jobs.jobs[-1]
    assert (name, args, when) == ("start_campaign", (row.id,), NOW + dt.timedelta(hours=2))
    # The queued job runs early (a clock skew, an edit to a later time): it does nothing.
    assert lifecycle.start(db, row.id, now=NOW + dt.timedelta(hours=1)) == "not due"
    assert lifecycle.due_campaigns(db, now=NOW + dt.timedelta(hours=1)) == []
    assert _count(db, row) == 0
    later = NOW + dt.timedelta(hours=2, seconds=1)
    assert lifecycle.due_campaigns(db, now=later) == [row.id]
    assert lifecycle.start(db, row.id, now=later) == "started"
    db.refresh(row)
    assert (row.status, row.started_at, row.snapshot_at) == ("in_progress", later, later)
    assert _count(db, row, "pending") == 3
    assert jobs.names()[-2:] == ["send_campaign", "send_campaign"]  # one per sender slot
    # A second start (the due scan and the enqueue_at job both fire): no new rows, no new state.
    assert lifecycle.start(db, row.id, now=later) == "started"
    assert _count(db, row) == 3


def test_switched_off_scheduled_campaign_does_not_send(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id]))
    lifecycle.schedule(db, row, now=NOW)
    lifecycle.set_enabled(db, row, False)
    later = NOW + dt.timedelta(hours=3)
    assert lifecycle.due_campaigns(db, now=later) == []
    assert lifecycle.start(db, row.id, now=later) == "switched off"
    db.refresh(row)
    assert (row.status, row.enabled) == ("scheduled", False)
    assert _count(db, row) == 0
    # Switched on again: it starts at the next scan.
    lifecycle.set_enabled(db, row, True)
    assert lifecycle.due_campaigns(db, now=later) == [row.id]


def test_send_now_goes_straight_to_in_progress_without_a_switcher(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None))
    lifecycle.schedule(db, row, now=NOW)
    assert row.status == "in_progress" and row.started_at == NOW
    assert jobs.names() == ["start_campaign"]
    with pytest.raises(CampaignError):
        lifecycle.set_enabled(db, row, False)
    with pytest.raises(CampaignError, match="cannot be edited"):
        lifecycle.save(db, shop, _values([us.id]), row)
    with pytest.raises(CampaignError, match="End the campaign"):
        lifecycle.delete(db, row)
    assert lifecycle.start(db, row.id, now=NOW) == "started"
    assert _count(db, row, "pending") == 3


def test_end_stops_the_remaining_rows_and_only_applies_in_progress(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None))
    lifecycle.schedule(db, row, now=NOW)
    lifecycle.start(db, row.id, now=NOW)
    token = "t" * 32
    first = sending.claim(db, row.id, token=token, size=1, now=NOW)
    assert len(first) == 1
    lifecycle.end(db, row, now=NOW + dt.timedelta(minutes=1))
    assert (row.status, row.finished_at) == ("ended", NOW + dt.timedelta(minutes=1))
    assert _count(db, row, "ended") == 3  # two pending and the claimed one (never requested)
    with pytest.raises(CampaignError, match="Only a campaign in progress"):
        lifecycle.end(db, row)
    # Nothing left for a sender.
    assert sending.claim(db, row.id, token="u" * 32, now=NOW + dt.timedelta(minutes=2)) == []
    lifecycle.delete(db, row)
    assert db.scalar(select(func.count()).select_from(Campaign)) == 0
    assert db.scalar(select(func.count()).select_from(Message)) == 0


def test_delete_a_draft_or_scheduled_campaign(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    draft = lifecycle.save(db, shop, _values([us.id]))
    scheduled = lifecycle.save(db, shop, _values([us.id], name="Other"))
    lifecycle.schedule(db, scheduled, now=NOW)
    lifecycle.delete(db, draft)
    lifecycle.delete(db, scheduled)
    assert db.scalar(select(func.count()).select_from(Campaign)) == 0
    assert db.scalar(select(func.count()).select_from(Segment)) == 1  # segments are untouched


def test_deleted_segment_fails_the_campaign_with_the_reason(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id]))
    lifecycle.schedule(db, row, now=NOW)
    service.delete_segment(db, db.get(Segment, us.id), confirmed=True)
    assert lifecycle.start(db, row.id, now=NOW + dt.timedelta(hours=3)) == "failed"
    db.refresh(row)
    assert row.status == "failed" and "segments were deleted" in row.failure_reason
    assert _count(db, row) == 0


def test_uninstalled_shop_fails_a_scheduled_campaign(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id]))
    lifecycle.schedule(db, row, now=NOW)
    shop.uninstalled_at = NOW + dt.timedelta(minutes=5)
    db.commit()
    assert lifecycle.due_campaigns(db, now=NOW + dt.timedelta(hours=3)) == []
    assert lifecycle.start(db, row.id, now=NOW + dt.timedelta(hours=3)) == "failed"
    db.refresh(row)
    assert (row.status, row.failure_reason) == ("failed", "App uninstalled")


def test_shopify_refusing_the_shared_code_fails_the_campaign_before_any_row(db, shop, audience_of_three, jobs,
                                                                            monkeypatch):
    from kinnekt.shopify import discounts
    from kinnekt.shopify.graphql import UserErrors
    _, us = audience_of_three

    def refuse(shop_, **terms):
        raise UserErrors([{"field": ["code"], "message": "Code must be unique"}])

    monkeypatch.setattr(discounts, "create_shared_code", refuse)
    row = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None, discount_mode="shared",
                                           discount_code="SPRING20", discount_kind="percent",
                                           discount_value=Decimal(20)))
    lifecycle.schedule(db, row, now=NOW)
    assert lifecycle.start(db, row.id, now=NOW) == "failed"
    db.refresh(row)
    assert row.status == "failed"
    assert row.failure_reason.startswith("Shopify refused the discount code") and "unique" in row.failure_reason
    assert _count(db, row) == 0 and "send_campaign" not in jobs.names()


def test_shared_code_is_created_once_with_the_terms(db, shop, audience_of_three, jobs, monkeypatch):
    from kinnekt.shopify import discounts
    _, us = audience_of_three
    calls = []

    def create(shop_, **terms):
        calls.append(terms)
        return discounts.CreatedDiscount("gid://shopify/DiscountCodeNode/77", [terms["code"]])

    monkeypatch.setattr(discounts, "create_shared_code", create)
    row = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None, discount_mode="shared",
                                           discount_code="SPRING20", discount_kind="amount",
                                           discount_value=Decimal("5.00")))
    lifecycle.schedule(db, row, now=NOW)
    assert lifecycle.start(db, row.id, now=NOW) == "started"
    assert lifecycle.start(db, row.id, now=NOW) == "started"  # again: not created twice
    assert len(calls) == 1
    assert calls[0]["code"] == "SPRING20" and calls[0]["value"].amount == Decimal("5.00")
    assert calls[0]["starts_at"] == NOW
    assert db.get(Campaign, row.id).discount_shopify_id == "gid://shopify/DiscountCodeNode/77"


def test_unique_codes_are_one_per_recipient_and_created_in_shopify(db, shop, audience_of_three, jobs, monkeypatch):
    from kinnekt.shopify import discounts
    people, us = audience_of_three
    subscriber(db, shop, status="unsubscribed")
    created = []

    def create(shop_, codes, **terms):
        created.append(list(codes))
        return discounts.CreatedDiscount("gid://shopify/DiscountCodeNode/9", list(codes))

    monkeypatch.setattr(discounts, "create_unique_codes", create)
    row = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None, discount_mode="unique",
                                           discount_code="vip", discount_kind="percent",
                                           discount_value=Decimal(15)))
    lifecycle.schedule(db, row, now=NOW)
    assert lifecycle.start(db, row.id, now=NOW) == "started"
    codes = dict(db.execute(select(Message.subscriber_id, Message.discount_code)
                            .where(Message.campaign_id == row.id)).tuples().all())
    assert set(codes) == {p.id for p in people}
    assert len(set(codes.values())) == 3 and all(c.startswith("VIP-") for c in codes.values())
    assert len(created) == 1 and sorted(created[0]) == sorted(codes.values())


def test_demo_shop_discount_is_not_sent_to_shopify(db, shop, audience_of_three, jobs, monkeypatch):
    from kinnekt.shopify import discounts
    _, us = audience_of_three
    shop.is_demo = True
    db.commit()
    monkeypatch.setattr(discounts, "create_shared_code", lambda *a, **k: pytest.fail("called Shopify"))
    row = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None, discount_mode="shared",
                                           discount_code="DEMO10", discount_kind="percent",
                                           discount_value=Decimal(10)))
    lifecycle.schedule(db, row, now=NOW)
    assert lifecycle.start(db, row.id, now=NOW) == "started"


def test_a_start_job_for_a_deleted_or_ended_campaign_does_nothing(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    row = lifecycle.save(db, shop, _values([us.id]))
    lifecycle.schedule(db, row, now=NOW)
    campaign_id = row.id
    lifecycle.delete(db, row)
    assert lifecycle.start(db, campaign_id, now=NOW + dt.timedelta(hours=3)) == "no campaign"
    ended = lifecycle.save(db, shop, _values([us.id], send_now=True, send_at=None))
    lifecycle.schedule(db, ended, now=NOW)
    lifecycle.start(db, ended.id, now=NOW)
    lifecycle.end(db, ended, now=NOW)
    assert lifecycle.start(db, ended.id, now=NOW) == "not started: ended"
    assert _count(db, ended, "pending") == 0
