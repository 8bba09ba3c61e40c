"""A segment's history (kinnekt.segments.history) and its rules in words (summaries.describe), on both databases:
builds and re-checks record the day's member count, the chart fills the days between, and the enter/leave log
is filtered, counted and paged in the database."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, select

from kinnekt.models import Campaign, CampaignSegment, Automation, SegmentCount, SegmentEvent, StaticList
from kinnekt.segments import history, membership, references, service, summaries
from tests.factories import customer, rule, subscriber, where
from tests.test_segment_membership import segment

pytestmark = pytest.mark.usefixtures("finished_jobs")

UTC = dt.timezone.utc
# 16:00 UTC is 11:00 in New York (the test shop's zone): the same local day.
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)


def counts(db, seg) -> list[tuple[dt.date, int]]:
    return [tuple(r) for r in db.execute(select(SegmentCount.day, SegmentCount.member_count)
                                         .where(SegmentCount.segment_id == seg.id).order_by(SegmentCount.day))]


# ---------------------------------------------------------------------------------------------- rules in words

def test_describe_gives_a_sentence_per_rule_in_nested_and_or_groups(db, shop):
    vip = StaticList(shop_id=shop.id, name="VIP phones")
    db.add(vip)
    db.commit()
    other = segment(db, shop, where(rule("number_of_orders", "gte", 2)), name="Repeat customers")
    definition = where(
        rule("money_spent", "gt", 25),
        where(rule("tags", "contains", "vip"), rule("list", "in", vip.id), rule("segment", "not_in", other.id),
              match="any"),
        rule("last_order_created", "eq", "last_30_days"))
    names = references.load_names(db, shop.id, [definition])
    words = summaries.describe(definition, names, lambda amount: f"${amount:,.2f}")
    assert words.match == "all" and words.joiner == "AND" and words.heading == "All of these are true:"
    first, group, last = words.items
    assert not first.is_group and first.text == "Money spent is greater than $25.00"
    assert last.text == "Last order was in the last 30 days"
    assert group.is_group and group.joiner == "OR" and group.heading == "At least one of these is true:"
    assert [item.text for item in group.items] == [
        "Customer tags include vip", "Is on list “VIP phones”", "Is not in segment “Repeat customers”"]
    assert [item.refers_to for item in group.items] == [None, ("list", vip.id), ("segment", other.id)]
    # An id the shop has no segment or list for (a stored definition older than a delete) names nothing.
    gone = summaries.describe(where(rule("segment", "in", other.id + 1000)), names)
    assert gone.items[0].refers_to is None and gone.items[0].text == f"Is in segment “#{other.id + 1000}”"


def test_describe_reads_auto_segments_and_refuses_what_cannot_be_read(db, shop):
    words = summaries.describe(where(rule("subscription_source", "eq", "keyword")))
    assert [item.text for item in words.items] == ["Subscription source is Keyword"]
    assert words.heading == "This is true:"
    assert summaries.describe({"match": "sometimes", "rules": []}) is None
    assert summaries.describe("not a definition") is None


# ---------------------------------------------------------------------------------------------- count history

def test_a_build_records_the_days_count_and_a_second_build_that_day_replaces_it(db, shop):
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    subscriber(db, shop)
    membership.build(db, seg.id, now=NOW)
    assert counts(db, seg) == [(dt.date(2026, 3, 15), 1)]
    subscriber(db, shop)
    membership.build(db, seg.id, now=NOW + dt.timedelta(hours=2))
    assert counts(db, seg) == [(dt.date(2026, 3, 15), 2)]  # one row per day: the last count of the day
    membership.build(db, seg.id, now=NOW + dt.timedelta(days=2))
    assert counts(db, seg) == [(dt.date(2026, 3, 15), 2), (dt.date(2026, 3, 17), 2)]


def test_the_day_is_the_shops_local_day(db, shop):
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    subscriber(db, shop)
    membership.build(db, seg.id, now=dt.datetime(2026, 3, 16, 3, 0, tzinfo=UTC))  # 23:00 on the 15th in New York
    assert counts(db, seg) == [(dt.date(2026, 3, 15), 1)]


def test_a_recheck_records_the_count_of_the_segments_it_changed_only(db, shop):
    spenders = segment(db, shop, where(rule("money_spent", "gt", 100)))
    everyone = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    person = customer(db, shop, money_spent=50)
    sub = subscriber(db, shop, customer=person)
    membership.build(db, spenders.id, now=NOW)
    membership.build(db, everyone.id, now=NOW)
    person.money_spent = 500
    db.commit()
    later = NOW + dt.timedelta(days=1)
    assert membership.recheck(db, shop.id, [sub.id], now=later) == [(spenders.id, sub.id, "enter")]
    assert counts(db, spenders) == [(dt.date(2026, 3, 15), 0), (dt.date(2026, 3, 16), 1)]
    assert counts(db, everyone) == [(dt.date(2026, 3, 15), 1)]  # nothing changed: no row


def test_count_history_fills_the_days_between_and_starts_with_the_count_before_the_window(db, shop):
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    rows = [(dt.date(2025, 11, 1), 7), (dt.date(2026, 3, 10), 9), (dt.date(2026, 3, 13), 4)]
    db.add_all(SegmentCount(shop_id=shop.id, segment_id=seg.id, day=day, member_count=n, at=NOW) for day, n in rows)
    db.commit()
    found = history.count_history(db, seg, timezone=shop.timezone, now=NOW, days=10)
    assert found.days[0] == dt.date(2026, 3, 6) and found.days[-1] == dt.date(2026, 3, 15) and len(found.days) == 10
    assert found.counts == [7, 7, 7, 7, 9, 9, 9, 4, 4, 4]
    assert found.timezone == "America/New_York"
    # Each point is the start of its local day (midnight in New York is 04:00 or 05:00 UTC).
    assert dt.datetime.fromtimestamp(found.t[0], UTC) == dt.datetime(2026, 3, 6, 5, 0, tzinfo=UTC)
    assert dt.datetime.fromtimestamp(found.t[-1], UTC) == dt.datetime(2026, 3, 15, 4, 0, tzinfo=UTC)
    assert found.as_chart()["labels"][-1] == "Mar 15, 2026"


def test_count_history_starts_at_the_first_count_and_is_empty_before_any(db, shop, other_shop):
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    assert history.count_history(db, seg, timezone=shop.timezone, now=NOW).t == []
    db.add(SegmentCount(shop_id=shop.id, segment_id=seg.id, day=dt.date(2026, 3, 14), member_count=3, at=NOW))
    db.commit()
    found = history.count_history(db, seg, timezone=shop.timezone, now=NOW)
    assert found.days == [dt.date(2026, 3, 14), dt.date(2026, 3, 15)] and found.counts == [3, 3]


# ---------------------------------------------------------------------------------------------- the log

@pytest.fixture
def logged(db, shop, other_shop):
    """A segment with 30 log entries (Ada enters, Bob enters and leaves in turn...), and another shop's segment."""
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    ada = subscriber(db, shop, phone="+12125550101", first_name="Ada")
    bob = subscriber(db, shop, phone="+12125550102", customer=customer(db, shop, first_name="Bob", last_name="Stone"))
    theirs = segment(db, other_shop, where(rule("subscription_source", "eq", "all")))
    mallory = subscriber(db, other_shop, phone="+12125550199", first_name="Mallory")
    rows = []
    for i in range(30):
        who = ada if i % 3 == 0 else bob
        kind = "enter" if i % 2 == 0 else "leave"
        rows.append(SegmentEvent(shop_id=shop.id, segment_id=seg.id, subscriber_id=who.id, kind=kind,
                                 at=NOW + dt.timedelta(minutes=i), cause="recheck" if i else "build"))
    rows.append(SegmentEvent(shop_id=other_shop.id, segment_id=theirs.id, subscriber_id=mallory.id, kind="enter",
                             at=NOW, cause="build"))
    db.add_all(rows)
    db.commit()
    return {"segment": seg, "ada": ada, "bob": bob, "theirs": theirs}


def test_the_log_is_paged_newest_first_and_a_page_past_the_end_is_the_last(db, logged):
    seg = logged["segment"]
    first = history.log_page(db, seg, page=1, size=12)
    assert first.total == 30 and first.number == 1 and len(first.entries) == 12
    ids = [e.id for e in first.entries]
    assert ids == sorted(ids, reverse=True)
    assert first.entries[0].at == NOW + dt.timedelta(minutes=29)
    third = history.log_page(db, seg, page=3, size=12)
    assert third.number == 3 and len(third.entries) == 6
    assert third.entries[-1].cause == "build" and third.entries[-1].cause_label == "Segment counted"
    assert history.log_page(db, seg, page=99, size=12).number == 3
    every = [e.id for p in (1, 2, 3) for e in history.log_page(db, seg, page=p, size=12).entries]
    assert len(set(every)) == 30


def test_the_log_filters_by_kind_and_by_phone_or_name(db, logged):
    seg, ada = logged["segment"], logged["ada"]
    entered = history.log_page(db, seg, kind="enter")
    assert entered.total == 15 and {e.kind for e in entered.entries} == {"enter"}
    assert entered.entries[0].kind_label == "Entered"
    by_name = history.log_page(db, seg, query="ada")
    assert by_name.total == 10 and {e.subscriber_id for e in by_name.entries} == {ada.id}
    assert by_name.entries[0].name == "Ada" and by_name.entries[0].phone == "+12125550101"
    assert history.log_page(db, seg, query="bob stone").total == 20  # the linked customer's full name
    assert history.log_page(db, seg, query="(212) 555-0102").total == 20  # the phone's digits
    both = history.log_page(db, seg, kind="leave", query="STONE")
    assert both.total == 10 and {(e.kind, e.name) for e in both.entries} == {("leave", "Bob Stone")}
    assert history.log_page(db, seg, query="mallory").total == 0  # another shop's subscriber
    assert history.log_page(db, seg, query="100%_").total == 0  # LIKE wildcards are plain text
    with pytest.raises(ValueError):
        history.log_page(db, seg, kind="joined")


def test_the_log_keeps_entries_of_deleted_subscribers_and_another_shops_are_never_shown(db, logged, other_shop):
    seg, ada = logged["segment"], logged["ada"]
    db.delete(ada)
    db.commit()
    page = history.log_page(db, seg, size=50)
    assert page.total == 30
    gone = [e for e in page.entries if e.phone is None]
    assert len(gone) == 10 and {e.name for e in gone} == {None}
    assert history.log_page(db, seg, query="ada").total == 0
    theirs = history.log_page(db, logged["theirs"])
    assert theirs.total == 1


def test_a_page_of_a_big_log_is_read_with_limit_and_offset_in_the_database(db, shop, logged):
    seg = logged["segment"]
    statements = []
    engine = db.get_bind()

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        page = history.log_page(db, seg, kind="leave", query="bob", page=2, size=5)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert page.total == 10 and len(page.entries) == 5
    selects = [s for s in statements if "segment_events" in s]
    assert len(selects) == 2  # the count and the page: no Python loop over the log
    assert "LIMIT" in selects[1].upper() and "OFFSET" in selects[1].upper()


# ---------------------------------------------------------------------------------------------- members, users

def test_member_sample_is_the_newest_members_of_this_segment(db, shop):
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    old = subscriber(db, shop, first_name="Old")
    membership.build(db, seg.id, now=NOW)
    new = subscriber(db, shop, customer=customer(db, shop, first_name="New", last_name="Comer"))
    membership.recheck(db, shop.id, [new.id], now=NOW + dt.timedelta(hours=1))
    sample = history.member_sample(db, seg)
    assert [(m.id, m.name) for m in sample] == [(new.id, "New Comer"), (old.id, "Old")]
    assert history.member_sample(db, seg, size=1)[0].id == new.id


def test_campaigns_and_automations_using_a_segment(db, shop):
    seg = segment(db, shop, where(rule("subscription_source", "eq", "all")))
    other = segment(db, shop, where(rule("subscription_source", "eq", "keyword")))
    sent = Campaign(shop_id=shop.id, name="Spring sale", status="completed")
    skipping = Campaign(shop_id=shop.id, name="VIP only", status="draft")
    unrelated = Campaign(shop_id=shop.id, name="Other", status="draft")
    message = Campaign(shop_id=shop.id, name="Welcome message", status="draft", kind="automation")
    db.add_all([sent, skipping, unrelated, message])
    db.flush()
    db.add_all([CampaignSegment(shop_id=shop.id, campaign_id=sent.id, segment_id=seg.id, mode="include"),
                CampaignSegment(shop_id=shop.id, campaign_id=skipping.id, segment_id=seg.id, mode="exclude"),
                CampaignSegment(shop_id=shop.id, campaign_id=unrelated.id, segment_id=other.id, mode="include"),
                Automation(shop_id=shop.id, campaign_id=message.id, name="Welcome", trigger="enter",
                           segment_id=seg.id, enabled=True)])
    db.commit()
    assert {(u.name, u.status, u.role) for u in service.campaigns_using(db, seg)} == {
        ("Spring sale", "Completed", "Sends to it"), ("VIP only", "Draft", "Leaves it out")}
    assert [(u.name, u.status, u.role) for u in service.automations_using(db, seg)] == [
        ("Welcome", "On", "When someone enters")]
    assert service.automations_using(db, other) == []
