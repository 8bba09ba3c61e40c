"""Automations service: form validation (bad input saves nothing), create / update / delete, the on/off contract
with the engine, the built-ins (idempotent), the usage finder, and the segment edit's trigger choice; both databases."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.automations import service
from kinnekt.automations.stats import mask_phone, recent_runs
from kinnekt.models import Automation, Campaign, Message, Segment, SegmentEvent, Subscriber
from kinnekt.queue import get_queue
from kinnekt.segments import auto
from kinnekt.segments import service as segments
from kinnekt.subscribers import keywords

pytestmark = pytest.mark.usefixtures("finished_jobs")

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def built(db) -> None:
    assert get_queue().drain(60)
    db.expire_all()


def total(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


def manual_segment(db, shop, name="VIP") -> Segment:
    segment = Segment(shop_id=shop.id, name=name, kind="manual", build_status="done",
                      definition={"match": "all", "rules": [{"field": "money_spent", "op": "gt", "value": 25}]})
    db.add(segment)
    db.commit()
    return segment


def form(chosen: Segment | None, **fields) -> dict:
    values = {"name": "Thank you", "trigger": "enter", "segment": str(chosen.id) if chosen else "",
              "delay_value": "2", "delay_unit": "hours", "body": "Hi {first_name}, thanks from {shop_name}!",
              "discount_mode": "none"}
    values.update(fields)
    return values


def saved(db, shop, segment, **fields) -> Automation:
    values, errors = service.validate(form(segment, **fields), session=db, shop=shop)
    assert errors == {}
    return service.create(db, shop, values)


# ---------------------------------------------------------------------------------------------- validation

def test_a_good_form_gives_the_automation_and_its_message_campaign(db, shop):
    segment = manual_segment(db, shop)
    values, errors = service.validate(form(segment, discount_mode="shared", discount_code="THANKS10",
                                           discount_kind="percent", discount_value="10",
                                           body="Hi {first_name}, use {discount_code}"), session=db, shop=shop)
    assert errors == {}
    automation = service.create(db, shop, values)
    db.expire_all()
    assert (automation.name, automation.trigger, automation.segment_id, automation.delay_seconds) == (
        "Thank you", "enter", segment.id, 7200)
    assert not automation.enabled and automation.builtin is None and automation.last_event_id == 0
    campaign = automation.campaign
    assert (campaign.kind, campaign.status, campaign.name) == ("automation", "draft", "Thank you")
    assert (campaign.body, campaign.discount_mode, campaign.discount_code, campaign.discount_kind,
            campaign.discount_value) == ("Hi {first_name}, use {discount_code}", "shared", "THANKS10", "percent",
                                         Decimal("10.00"))


@pytest.mark.parametrize("fields, field", [
    ({"name": "   "}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"trigger": "stay"}, "trigger"),
    ({"segment": ""}, "segment"),
    ({"segment": "abc"}, "segment"),
    ({"segment": "999999"}, "segment"),
    ({"delay_value": "-1"}, "delay"),
    ({"delay_value": "1.5"}, "delay"),
    ({"delay_value": "366", "delay_unit": "days"}, "delay"),
    ({"delay_unit": "weeks"}, "delay"),
    ({"body": "  "}, "body"),
    ({"body": "Hi {firstname}"}, "body"),
    ({"body": "Use {discount_code}"}, "body"),
    ({"discount_mode": "free"}, "discount_mode"),
    ({"discount_mode": "shared", "discount_code": "", "discount_kind": "percent", "discount_value": "10"},
     "discount_code"),
    ({"discount_mode": "unique", "discount_code": "BAD PREFIX!", "discount_kind": "percent", "discount_value": "10"},
     "discount_code"),
    ({"discount_mode": "shared", "discount_code": "A", "discount_kind": "percent", "discount_value": "150"},
     "discount_value"),
])
def test_bad_input_is_an_error_beside_its_field_and_saves_nothing(db, shop, fields, field):
    segment = manual_segment(db, shop)
    values, errors = service.validate(form(segment, **fields), session=db, shop=shop)
    assert field in errors and errors[field]
    assert total(db, Automation) == 0 and total(db, Campaign) == 0


def test_another_shops_segment_is_refused(db, shop, other_shop):
    theirs = manual_segment(db, other_shop, "Theirs")
    _, errors = service.validate(form(theirs), session=db, shop=shop)
    assert "segment" in errors


def test_a_zero_delay_sends_at_once_and_the_labels_say_so(db, shop):
    segment = manual_segment(db, shop)
    automation = saved(db, shop, segment, delay_value="0")
    assert automation.delay_seconds == 0
    assert service.delay_label(0) == "Immediately"
    assert service.delay_label(7200) == "2 hours after"
    assert service.delay_label(86400) == "1 day after"
    assert service.delay_label(90 * 60) == "90 minutes after"
    assert service.trigger_label(automation, segment) == "Enters VIP"
    assert service.split_delay(3 * 86400) == (3, "days")


def test_update_changes_the_automation_and_its_message(db, shop):
    segment = manual_segment(db, shop)
    other = manual_segment(db, shop, "Other")
    automation = saved(db, shop, segment)
    values, errors = service.validate(form(other, name="Goodbye", trigger="leave", delay_value="3",
                                           delay_unit="days", body="Bye {first_name}"), session=db, shop=shop)
    assert not errors
    service.update(db, automation, values)
    db.expire_all()
    assert (automation.name, automation.trigger, automation.segment_id, automation.delay_seconds) == (
        "Goodbye", "leave", other.id, 3 * 86400)
    assert (automation.campaign.name, automation.campaign.body) == ("Goodbye", "Bye {first_name}")


# ---------------------------------------------------------------------------------------------- on / off

def test_switching_on_starts_from_the_newest_segment_event_and_puts_the_campaign_in_progress(db, shop, other_shop):
    segment = manual_segment(db, shop)
    automation = saved(db, shop, segment)
    db.add_all([SegmentEvent(shop_id=shop.id, segment_id=segment.id, subscriber_id=1, kind="enter", cause="recheck"),
                SegmentEvent(shop_id=shop.id, segment_id=segment.id, subscriber_id=2, kind="enter", cause="recheck")])
    db.commit()
    newest = db.scalar(select(func.max(SegmentEvent.id)).where(SegmentEvent.shop_id == shop.id))
    db.add(SegmentEvent(shop_id=other_shop.id, segment_id=99, subscriber_id=3, kind="enter", cause="recheck"))
    db.commit()

    service.set_enabled(db, automation, True, now=NOW)
    db.expire_all()
    assert automation.enabled and automation.enabled_at == NOW and automation.last_event_id == newest
    campaign = automation.campaign
    assert campaign.status == "in_progress" and campaign.started_at == NOW and campaign.snapshot_at == NOW


def test_switching_on_with_no_events_starts_at_zero(db, shop):
    automation = saved(db, shop, manual_segment(db, shop))
    service.set_enabled(db, automation, True, now=NOW)
    db.expire_all()
    assert automation.enabled and automation.last_event_id == 0


def test_switching_off_makes_a_draft_and_ends_the_unsent_messages(db, shop):
    automation = saved(db, shop, manual_segment(db, shop))
    service.set_enabled(db, automation, True, now=NOW)
    sub = Subscriber(shop_id=shop.id, phone="+12125550101", status="subscribed", source="manual")
    db.add(sub)
    db.commit()
    for occurrence, status in ((1, "pending"), (2, "claimed"), (3, "sent")):
        db.add(Message(shop_id=shop.id, campaign_id=automation.campaign_id, subscriber_id=sub.id, kind="automation",
                       occurrence=occurrence, to_phone=sub.phone, status=status))
    db.commit()

    service.set_enabled(db, automation, False, now=NOW)
    db.expire_all()
    assert not automation.enabled and automation.campaign.status == "draft"
    statuses = sorted(db.scalars(select(Message.status).where(Message.campaign_id == automation.campaign_id)))
    assert statuses == ["ended", "ended", "sent"]
    runs = recent_runs(db, automation)
    assert [r.status for r in runs] == ["sent", "ended", "ended"] and runs[0].phone == mask_phone(sub.phone)
    assert "0101" in runs[0].phone and "555" not in runs[0].phone


def test_an_automation_without_a_segment_cannot_be_switched_on(db, shop):
    segment = manual_segment(db, shop)
    automation = saved(db, shop, segment)
    db.delete(segment)
    db.commit()
    db.expire_all()
    assert automation.segment_id is None
    with pytest.raises(service.AutomationError, match="no segment"):
        service.set_enabled(db, automation, True, now=NOW)
    db.rollback()
    db.expire_all()
    assert not automation.enabled and automation.campaign.status == "draft"


def test_delete_deletes_the_campaign_and_its_messages(db, shop):
    automation = saved(db, shop, manual_segment(db, shop))
    keep = saved(db, shop, manual_segment(db, shop, "Other"), name="Keep")
    service.set_enabled(db, automation, True, now=NOW)
    db.add(Message(shop_id=shop.id, campaign_id=automation.campaign_id, kind="automation", occurrence=1,
                   to_phone="+12125550101", status="pending"))
    db.commit()
    service.delete(db, automation)
    assert total(db, Automation) == 1 and total(db, Campaign) == 1 and total(db, Message) == 0
    assert db.scalar(select(Automation.name)) == keep.name


# ---------------------------------------------------------------------------------------------- built-ins

def test_builtins_are_created_switched_off_once(db, shop, other_shop):
    auto.ensure_default_segments(db, shop)
    join = keywords.create_keyword(db, shop, word="join")
    vip = keywords.create_keyword(db, shop, word="VIP")
    created = service.ensure_builtins(db, shop)
    assert sorted(a.builtin for a in created) == sorted(["welcome", f"keyword:{join.id}", f"keyword:{vip.id}",
                                                         "winback"])
    assert service.ensure_builtins(db, shop) == []
    built(db)
    assert service.ensure_builtins(db, shop) == []
    rows = {a.builtin: a for a in db.scalars(select(Automation).where(Automation.shop_id == shop.id))}
    assert len(rows) == 4 and not any(a.enabled for a in rows.values())
    assert all(a.trigger == "enter" and a.delay_seconds == 0 and a.campaign.kind == "automation"
               and a.campaign.status == "draft" for a in rows.values())

    everyone = db.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.auto_source == "all"))
    assert (rows["welcome"].name, rows["welcome"].segment_id) == ("Welcome", everyone.id)
    assert "{first_name}" in rows["welcome"].campaign.body and "{shop_name}" in rows["welcome"].campaign.body
    keyword_segment = db.scalar(select(Segment).where(Segment.keyword_id == join.id))
    assert rows[f"keyword:{join.id}"].name == "Keyword welcome: JOIN"
    assert rows[f"keyword:{join.id}"].segment_id == keyword_segment.id
    assert "JOIN" in rows[f"keyword:{join.id}"].campaign.body
    winback = db.get(Segment, rows["winback"].segment_id)
    assert (winback.name, winback.kind) == (service.WINBACK_SEGMENT, "manual")
    assert winback.definition == service.WINBACK_DEFINITION and winback.has_relative_time
    for automation in rows.values():  # every built-in message passes the form's own rules
        _, errors = service.validate(form(db.get(Segment, automation.segment_id), body=automation.campaign.body),
                                     session=db, shop=shop)
        assert errors == {}
    assert db.scalar(select(func.count()).select_from(Automation).where(Automation.shop_id == other_shop.id)) == 0


def test_a_deleted_builtin_comes_back_and_a_new_keyword_gets_its_welcome(db, shop):
    auto.ensure_default_segments(db, shop)
    service.ensure_builtins(db, shop)
    welcome = db.scalar(select(Automation).where(Automation.builtin == "welcome"))
    service.delete(db, welcome)
    word = keywords.create_keyword(db, shop, word="SALE")
    created = service.ensure_builtins(db, shop)
    assert sorted(a.builtin for a in created) == sorted(["welcome", f"keyword:{word.id}"])
    assert db.scalar(select(func.count()).select_from(Segment).where(Segment.name == service.WINBACK_SEGMENT)) == 1


def test_builtins_are_offered_without_writing_and_added_one_by_one(db, shop):
    auto.ensure_default_segments(db, shop)
    join = keywords.create_keyword(db, shop, word="join")
    segments_before = db.scalar(select(func.count()).select_from(Segment))
    offered = service.offered_builtins(db, shop)
    assert [o.key for o in offered] == ["welcome", f"keyword:{join.id}", "winback"]
    assert offered[-1].segment is None and offered[-1].segment_name == service.WINBACK_SEGMENT
    assert db.scalar(select(func.count()).select_from(Automation)) == 0
    assert db.scalar(select(func.count()).select_from(Segment)) == segments_before

    winback = service.add_builtin(db, shop, "winback")
    assert (winback.builtin, winback.enabled, winback.campaign.body) == ("winback", False, service.WINBACK_TEXT)
    assert db.get(Segment, winback.segment_id).name == service.WINBACK_SEGMENT
    assert service.add_builtin(db, shop, "winback").id == winback.id  # twice adds it once
    assert [o.key for o in service.offered_builtins(db, shop)] == ["welcome", f"keyword:{join.id}"]
    service.delete(db, winback)
    assert [o.key for o in service.offered_builtins(db, shop)][-1] == "winback"  # offered again
    with pytest.raises(service.AutomationError):
        service.add_builtin(db, shop, "keyword:999999")
    assert db.scalar(select(func.count()).select_from(Automation)) == 0


def test_the_uniqueness_of_a_builtin_is_the_databases(db, shop):
    auto.ensure_default_segments(db, shop)
    service.ensure_builtins(db, shop)
    everyone = db.scalar(select(Segment).where(Segment.auto_source == "all"))
    values, _ = service.validate(form(everyone), session=db, shop=shop)
    from sqlalchemy.exc import IntegrityError
    with pytest.raises(IntegrityError):
        service.create(db, shop, values, builtin="welcome")
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Automation).where(Automation.builtin == "welcome")) == 1


# ---------------------------------------------------------------------------------------------- segments

def test_deleting_a_segment_names_the_automations_that_use_it(db, shop):
    segment = manual_segment(db, shop)
    automation = saved(db, shop, segment)
    usages = segments.segment_usages(db, segment)
    assert [(u.kind, u.id, u.label) for u in usages] == [("automation", automation.id, "Automation “Thank you” (Off)")]
    assert segments.delete_segment(db, segment, confirmed=False) == usages
    assert db.get(Segment, segment.id) is not None


def test_deleting_its_segment_switches_the_automation_off_and_ends_its_waiting_messages(db, shop):
    segment = manual_segment(db, shop)
    other = manual_segment(db, shop, "Other")
    automation = saved(db, shop, segment)
    bystander = saved(db, shop, other, name="Bystander")
    service.set_enabled(db, automation, True, now=NOW)
    service.set_enabled(db, bystander, True, now=NOW)
    for campaign_id, status in ((automation.campaign_id, "pending"), (automation.campaign_id, "sent"),
                                (bystander.campaign_id, "pending")):
        db.add(Message(shop_id=shop.id, campaign_id=campaign_id, kind="automation", occurrence=1 + total(db, Message),
                       to_phone="+12125550101", status=status))
    db.commit()
    assert segments.delete_segment(db, segment, confirmed=True)
    db.expire_all()
    assert db.get(Segment, segment.id) is None
    assert (automation.enabled, automation.segment_id, automation.campaign.status) == (False, None, "draft")
    assert sorted(db.scalars(select(Message.status).where(Message.campaign_id == automation.campaign_id))) == [
        "ended", "sent"]
    assert bystander.enabled and bystander.campaign.status == "in_progress"
    assert db.scalar(select(Message.status).where(Message.campaign_id == bystander.campaign_id)) == "pending"
    with pytest.raises(service.AutomationError, match="no segment"):
        service.set_enabled(db, automation, True, now=NOW)


def _causes(db, segment) -> set[str]:
    return set(db.scalars(select(SegmentEvent.cause).where(SegmentEvent.segment_id == segment.id)))


@pytest.mark.parametrize("trigger, cause", [(False, "edit"), (True, "edit_trigger")])
def test_a_segment_edit_logs_edit_trigger_only_when_asked(db, shop, trigger, cause):
    cheap = Subscriber(shop_id=shop.id, phone="+12125550111", status="subscribed", source="manual")
    db.add(cheap)
    db.commit()
    segment = segments.create_segment(db, shop, name="Nobody", definition={
        "match": "all", "rules": [{"field": "sent_count", "op": "gt", "value": 5}]})
    built(db)
    segments.update_segment(db, segment, name="Everybody", definition={
        "match": "all", "rules": [{"field": "sent_count", "op": "eq", "value": 0}]}, trigger_automations=trigger)
    built(db)
    assert _causes(db, segment) == {cause}


def _event(db, shop, segment, subscriber_id=1, kind="enter"):
    db.add(SegmentEvent(shop_id=shop.id, segment_id=segment.id, subscriber_id=subscriber_id, kind=kind,
                        cause="recheck"))
    db.commit()


def test_pointing_an_automation_that_is_on_at_another_segment_reads_that_log_from_now(db, shop):
    vip, everyone = manual_segment(db, shop), manual_segment(db, shop, name="Everyone")
    automation = saved(db, shop, vip)
    service.set_enabled(db, automation, True, now=NOW)
    _event(db, shop, everyone)  # entered Everyone before the automation watched it: must never fire
    newest = db.scalar(select(func.max(SegmentEvent.id)))
    values, errors = service.validate(form(everyone), session=db, shop=shop)
    assert errors == {}
    service.update(db, automation, values)
    db.expire_all()
    assert automation.segment_id == everyone.id and automation.last_event_id == newest
    _event(db, shop, everyone, subscriber_id=2)
    service.update(db, automation, values)  # same segment and trigger: the cursor stays
    db.expire_all()
    assert automation.last_event_id == newest


def test_changing_the_discount_makes_the_next_fire_create_it_again(db, shop):
    automation = saved(db, shop, manual_segment(db, shop), body="Take {discount_code}", discount_mode="shared",
                       discount_code="WELCOME10", discount_kind="percent", discount_value="10")
    automation.campaign.discount_shopify_id = "gid://shopify/DiscountCodeNode/1"
    db.commit()
    values, errors = service.validate(form(db.get(Segment, automation.segment_id), body="Take {discount_code}",
                                           discount_mode="shared", discount_code="WELCOME10",
                                           discount_kind="percent", discount_value="10"), session=db, shop=shop)
    service.update(db, automation, values)  # nothing about the discount changed
    assert automation.campaign.discount_shopify_id == "gid://shopify/DiscountCodeNode/1"
    values["discount_code"], values["discount_value"] = "WELCOME20", Decimal(20)
    service.update(db, automation, values)
    db.expire_all()
    assert automation.campaign.discount_code == "WELCOME20" and automation.campaign.discount_shopify_id is None


def test_after_an_uninstall_automations_are_off_and_switching_on_rearms_them(db, shop):
    from kinnekt.shopify.handlers import mark_uninstalled
    automation = saved(db, shop, manual_segment(db, shop))
    service.set_enabled(db, automation, True, now=NOW)
    mark_uninstalled(db, shop, at=NOW)
    db.expire_all()
    assert not automation.enabled and automation.campaign.status == "ended"
    automation.enabled = True  # as a shop uninstalled before this rule left it
    db.commit()
    service.set_enabled(db, automation, True, now=NOW)
    db.expire_all()
    assert automation.enabled and automation.campaign.status == "in_progress"


def test_a_deleted_winback_segment_is_not_made_again_while_win_back_exists(db, shop):
    auto.ensure_default_segments(db, shop)
    service.ensure_builtins(db, shop)
    winback = db.scalar(select(Segment).where(Segment.name == service.WINBACK_SEGMENT))
    segments.delete_segment(db, winback, confirmed=True)
    built(db)
    assert service.ensure_builtins(db, shop) == []
    assert db.scalar(select(func.count()).select_from(Segment).where(Segment.name == service.WINBACK_SEGMENT)) == 0
