"""Segment service: create / edit / copy / delete with their rules, usages, suggestions and the CSV export."""
from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.models import Campaign, CampaignSegment, Segment, SegmentEvent, SegmentMember, Subscriber
from kinnekt.queue import get_queue
from kinnekt.segments import auto, service
from kinnekt.segments.compiler import count
from kinnekt.segments.rules import DefinitionError, validate
from tests import factories
from tests.factories import buyer, customer, rule, subscriber, where
from tests.test_segment_membership import NOW, RECENT_BUYERS, SPENT_OVER_25, events, member_ids

pytestmark = pytest.mark.usefixtures("finished_jobs")


def built(db) -> None:
    """Let the queued builds run, then read fresh rows."""
    assert get_queue().drain(60)
    db.expire_all()


def segment_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Segment))


# ---------------------------------------------------------------------------------------------- create

def test_create_validates_stores_the_normalised_definition_and_builds(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"))
    subscriber(db, shop)
    segment = service.create_segment(db, shop, name="  Big   spenders ", definition=RECENT_BUYERS)
    assert segment.name == "Big spenders" and segment.kind == "manual" and segment.editable
    assert segment.definition["rules"][1] == {"field": "money_spent", "op": "gt", "value": "25"}  # normalised
    assert segment.has_relative_time
    plain = service.create_segment(db, shop, name="Spent over 25", definition=SPENT_OVER_25)
    assert not plain.has_relative_time
    built(db)
    assert member_ids(db, plain) == {sub.id}
    assert events(db, plain) == [(sub.id, "enter", "build")]
    assert db.get(Segment, plain.id).build_status == "done"


def test_an_invalid_definition_is_refused_with_every_error_and_nothing_is_saved(db, shop):
    with pytest.raises(DefinitionError) as caught:
        service.create_segment(db, shop, name="Broken", definition=where(
            rule("money_spent", "gt", "lots"), rule("nope", "eq", 1), rule("segment", "in", 99999)))
    paths = [e["path"] for e in caught.value.errors]
    assert paths == ["rules[0].value", "rules[1].field", "rules[2].value"]
    assert segment_count(db) == 0


@pytest.mark.parametrize("name", ["", "   ", None, "x" * 256])
def test_a_name_is_required_and_bounded(db, shop, name):
    with pytest.raises(service.InvalidSegmentName):
        service.create_segment(db, shop, name=name, definition=SPENT_OVER_25)
    assert segment_count(db) == 0


def test_names_are_unique_per_shop(db, shop, other_shop):
    service.create_segment(db, shop, name="VIP", definition=SPENT_OVER_25)
    with pytest.raises(service.SegmentNameTaken, match="already exists"):
        service.create_segment(db, shop, name="VIP", definition=SPENT_OVER_25)
    assert segment_count(db) == 1
    service.create_segment(db, other_shop, name="VIP", definition=SPENT_OVER_25)  # another shop may
    assert segment_count(db) == 2


def test_rules_cannot_name_another_shops_segment(db, shop, other_shop):
    theirs = service.create_segment(db, other_shop, name="Theirs", definition=SPENT_OVER_25)
    with pytest.raises(DefinitionError):
        service.create_segment(db, shop, name="Mine", definition=where(rule("segment", "in", theirs.id)))


# ---------------------------------------------------------------------------------------------- update

def test_an_edit_rebuilds_and_logs_the_difference_as_edit(db, shop):
    cheap, _ = buyer(db, shop, money_spent=Decimal("10"))
    rich, _ = buyer(db, shop, money_spent=Decimal("100"))
    segment = service.create_segment(db, shop, name="Spenders", definition=where(rule("money_spent", "gt", 50)))
    built(db)
    assert member_ids(db, segment) == {rich.id}

    service.update_segment(db, segment, name="Spenders", definition=where(rule("money_spent", "lt", 50)))
    built(db)
    assert member_ids(db, segment) == {cheap.id}
    assert events(db, segment, cause="edit") == [(rich.id, "leave", "edit"), (cheap.id, "enter", "edit")]


def test_a_rename_alone_does_not_rebuild(db, shop):
    buyer(db, shop, money_spent=Decimal("100"))
    segment = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)
    built(db)
    built_at = segment.last_built_at
    service.update_segment(db, segment, name="Big spenders", definition=SPENT_OVER_25)
    built(db)
    stored = db.get(Segment, segment.id)
    assert (stored.name, stored.build_status, stored.last_built_at) == ("Big spenders", "done", built_at)
    assert len(events(db, segment)) == 1


def test_a_failed_edit_changes_nothing(db, shop):
    service.create_segment(db, shop, name="Taken", definition=SPENT_OVER_25)
    segment = service.create_segment(db, shop, name="Mine", definition=SPENT_OVER_25)
    with pytest.raises(service.SegmentNameTaken):
        service.update_segment(db, segment, name="Taken", definition=where(rule("money_spent", "gt", 99)))
    with pytest.raises(DefinitionError) as caught:
        service.update_segment(db, segment, name="Mine", definition=where(rule("segment", "in", segment.id)))
    assert caught.value.errors[0]["message"] == "a segment cannot refer to itself"
    db.expire_all()
    stored = db.get(Segment, segment.id)
    assert (stored.name, stored.definition) == ("Mine", {"match": "all", "rules": [
        {"field": "money_spent", "op": "gt", "value": "25"}]})


def test_auto_segments_cannot_be_edited(db, shop):
    everyone, *_ = auto.ensure_default_segments(db, shop)
    with pytest.raises(service.SegmentNotEditable):
        service.update_segment(db, everyone, name="Everyone", definition=SPENT_OVER_25)
    db.expire_all()
    assert db.get(Segment, everyone.id).name == "All subscribers"


def test_editing_a_segment_rebuilds_those_referring_to_it_and_their_sweep_flag(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"), last_order_at=dt.datetime.now(dt.timezone.utc))
    inner = service.create_segment(db, shop, name="Inner", definition=where(rule("money_spent", "gt", 100)))
    outer = service.create_segment(db, shop, name="Outer", definition=where(rule("segment", "in", inner.id)))
    built(db)
    assert not outer.has_relative_time and member_ids(db, outer) == set()
    service.update_segment(db, inner, name="Inner", definition=RECENT_BUYERS)
    built(db)
    assert member_ids(db, outer) == {sub.id}
    assert db.get(Segment, outer.id).has_relative_time  # it now changes as time passes
    assert events(db, outer) == [(sub.id, "enter", "edit")]


# ---------------------------------------------------------------------------------------------- copy

def test_copies_get_unique_names_and_their_own_members(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"))
    original = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)
    first = service.copy_segment(db, original)
    second = service.copy_segment(db, original)
    assert (first.name, second.name) == ("Copy of Spenders", "Copy of Spenders (2)")
    assert first.definition == original.definition and first.kind == "manual"
    popup = auto.ensure_default_segments(db, shop)[1]
    copied_auto = service.copy_segment(db, popup)
    assert (copied_auto.name, copied_auto.kind, copied_auto.editable) == ("Copy of Mobile Popup", "manual", True)
    built(db)
    assert member_ids(db, first) == member_ids(db, second) == {sub.id}


# ---------------------------------------------------------------------------------------------- usages / delete

def campaign(db, shop, segment, status, mode="include") -> Campaign:
    return factories.campaign(db, shop, **{mode: [segment]}, name=f"{status} campaign", body="", status=status)


def test_usages_name_scheduled_and_sending_campaigns_and_referring_segments(db, shop):
    segment = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)
    scheduled = campaign(db, shop, segment, "scheduled")
    sending = campaign(db, shop, segment, "in_progress", mode="exclude")
    campaign(db, shop, segment, "draft")
    campaign(db, shop, segment, "completed")
    referring = service.create_segment(db, shop, name="Not spenders",
                                       definition=where(rule("segment", "not_in", segment.id)))
    usages = service.segment_usages(db, segment)
    assert usages == [service.Usage("campaign", scheduled.id, "scheduled campaign", "Scheduled"),
                      service.Usage("campaign", sending.id, "in_progress campaign", "In Progress"),
                      service.Usage("segment", referring.id, "Not spenders")]
    assert usages[0].label == "Campaign “scheduled campaign” (Scheduled)"
    assert service.segment_usages(db, referring) == []


def test_automations_can_report_their_usages_through_the_extension_point(db, shop, monkeypatch):
    monkeypatch.setattr(service, "USAGE_FINDERS", list(service.USAGE_FINDERS))
    segment = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)
    service.register_usage_finder(lambda session, seg: [service.Usage("automation", 7, "Welcome flow")])
    assert service.segment_usages(db, segment) == [service.Usage("automation", 7, "Welcome flow")]


def test_delete_asks_first_when_the_segment_is_used(db, shop):
    sub, _ = buyer(db, shop, money_spent=Decimal("30"))
    segment = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)
    referring = service.create_segment(db, shop, name="Spenders too",
                                       definition=where(rule("segment", "in", segment.id)))
    scheduled = campaign(db, shop, segment, "scheduled")
    built(db)
    assert member_ids(db, referring) == {sub.id}

    usages = service.delete_segment(db, segment, confirmed=False)
    assert [u.kind for u in usages] == ["campaign", "segment"]
    assert db.get(Segment, segment.id) is not None  # nothing deleted yet

    assert service.delete_segment(db, segment, confirmed=True) == usages
    built(db)
    assert db.get(Segment, segment.id) is None
    assert db.scalar(select(func.count()).select_from(CampaignSegment)) == 0
    assert db.get(Campaign, scheduled.id) is not None
    assert db.scalar(select(func.count()).select_from(SegmentMember).where(SegmentMember.segment_id == segment.id)) == 0
    assert db.get(Subscriber, sub.id).status == "subscribed"  # subscribers are never touched
    assert member_ids(db, referring) == set()  # its rule now names a segment with no members
    assert events(db, referring)[-1] == (sub.id, "leave", "edit")
    # The log outlives the segment.
    assert db.scalar(select(func.count()).select_from(SegmentEvent).where(SegmentEvent.segment_id == segment.id)) == 1


def test_an_unused_segment_and_an_auto_segment_are_deleted_at_once(db, shop):
    sub = subscriber(db, shop, source="mobile_popup")
    segments = auto.ensure_default_segments(db, shop)
    built(db)
    popup = segments[1]
    assert service.delete_segment(db, popup, confirmed=False) == []
    assert db.get(Segment, popup.id) is None
    assert db.get(Subscriber, sub.id) is not None
    auto.ensure_default_segments(db, shop)  # install again: the source's segment comes back
    assert sorted(db.scalars(select(Segment.name))) == ["All subscribers", "Mobile Popup", "Shareable Link"]


# ---------------------------------------------------------------------------------------------- suggestions

SEED_EXAMPLES = ("Ordered in last 30 days and spent over $25",
                 "Loyal but inactive: spent over 1,000 and no order in 90 days",
                 "Clickers who got only one message", "Clicked but not texted for 30 days",
                 "Never clicked, texted once")


def test_suggestions_hold_the_seed_examples_and_all_validate_and_compile(db, shop):
    suggestions = service.suggested_segments()
    names = [s.name for s in suggestions]
    assert names[:5] == list(SEED_EXAMPLES) and len(set(names)) == len(names)
    for suggestion in suggestions:
        assert suggestion.description
        assert validate(suggestion.definition, shop_id=shop.id, session=db) is not None
        assert count(db, suggestion.definition, shop=shop, now=NOW) == 0
    suggestions[0].definition["rules"].clear()  # callers get their own copies
    assert service.suggested_segments()[0].definition["rules"]


def test_suggestions_find_the_subscribers_they_describe(db, shop):
    now = dt.datetime.now(dt.timezone.utc)
    loyal, _ = buyer(db, shop, money_spent=Decimal("1500"), orders_count=9, last_order_at=now - dt.timedelta(days=120))
    recent, _ = buyer(db, shop, money_spent=Decimal("40"), orders_count=1, last_order_at=now - dt.timedelta(days=3))
    clicker = subscriber(db, shop, sent_count=1, clicks_count=1, last_received_at=now - dt.timedelta(days=40))
    silent = subscriber(db, shop, sent_count=1, clicks_count=0, last_received_at=now - dt.timedelta(days=2))
    expected = {SEED_EXAMPLES[0]: {recent.id}, SEED_EXAMPLES[1]: {loyal.id}, SEED_EXAMPLES[2]: {clicker.id},
                SEED_EXAMPLES[3]: {clicker.id}, SEED_EXAMPLES[4]: {silent.id}}
    for suggestion in service.suggested_segments()[:5]:
        segment = service.create_segment(db, shop, name=suggestion.name, definition=suggestion.definition)
        built(db)
        assert member_ids(db, segment) == expected[suggestion.name], suggestion.name


def test_lifecycle_suggestions_find_loyal_and_slipping_customers(db, shop):
    loyal, _ = buyer(db, shop, lifecycle_stage="loyal", lifecycle_previous_stage="high_potential")
    slipping, _ = buyer(db, shop, lifecycle_stage="dormant", lifecycle_previous_stage="loyal")
    buyer(db, shop, lifecycle_stage="dormant", lifecycle_previous_stage="nurture_needed")
    subscriber(db, shop)
    by_name = {s.name: s for s in service.suggested_segments()}
    for name, expected in (("Loyal customers", {loyal.id}), ("Churn risk: was loyal, now dormant", {slipping.id})):
        segment = service.create_segment(db, shop, name=name, definition=by_name[name].definition)
        built(db)
        assert member_ids(db, segment) == expected, name


# ---------------------------------------------------------------------------------------------- export

def test_export_streams_the_members_as_csv(db, shop, other_shop, monkeypatch):
    monkeypatch.setattr("kinnekt.defaults.SEGMENT_EXPORT_CHUNK", 2)
    person = customer(db, shop, first_name="Ada", last_name="Lovelace", email="ada@example.com",
                      money_spent=Decimal("30"))
    subscriber(db, shop, customer=person, phone="+12125550101", source="keyword",
                        subscribed_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    sneaky = customer(db, shop, first_name="=HYPERLINK(\"x\")", last_name="-1", money_spent=Decimal("30"))
    subscriber(db, shop, customer=sneaky, phone="+442079460018", source="mobile_popup", first_name="@Bob")
    for n in range(3):
        subscriber(db, shop, customer=customer(db, shop, money_spent=Decimal("50")), phone=f"+1650253000{n}")
    subscriber(db, shop, phone="+16502539999")  # spent nothing: not a member
    subscriber(db, other_shop, customer=customer(db, other_shop, money_spent=Decimal("99")), phone="+16502538888")
    segment = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)

    chunks = list(service.export_members_csv(db, segment, now=NOW))
    assert chunks[0] == "phone,first_name,last_name,email,status,source,subscribed_at\r\n"
    assert len(chunks) == 1 + 3  # five members, two rows per fetch
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert rows[0] == list(service.EXPORT_HEADER)
    assert rows[1] == ["+12125550101", "Ada", "Lovelace", "ada@example.com", "subscribed", "keyword",
                       "2026-01-02T03:04:05Z"]
    assert rows[2] == ["+442079460018", "'@Bob", "'-1", "", "subscribed", "mobile_popup", ""]
    assert [r[0] for r in rows[3:]] == ["+16502530000", "+16502530001", "+16502530002"]


@pytest.mark.parametrize("name", ["\uff1dHYPERLINK(\"http://evil\")", "\ufeff=1+1", "|cmd", " =1", "\u200b@SUM(1)",
                                  "\uff0b1", "\uff20x", "\ufe66x", "\t=1"])
def test_export_never_starts_a_cell_a_spreadsheet_runs(db, shop, name):
    """Full-width and small formula characters, a byte order mark or a space before one, and `|` (DDE)."""
    sneaky = customer(db, shop, first_name=name, last_name="Lovelace", money_spent=Decimal("30"))
    subscriber(db, shop, customer=sneaky, phone="+12125550101", source="keyword")
    segment = service.create_segment(db, shop, name="Spenders", definition=SPENT_OVER_25)
    rows = list(csv.reader(io.StringIO("".join(service.export_members_csv(db, segment, now=NOW)))))
    assert rows[1][1] == "'" + name and rows[1][2] == "Lovelace"


def test_export_of_an_empty_segment_is_the_header_alone(db, shop):
    segment = service.create_segment(db, shop, name="Nobody", definition=SPENT_OVER_25)
    assert "".join(service.export_members_csv(db, segment, now=NOW)) == (
        "phone,first_name,last_name,email,status,source,subscribed_at\r\n")
