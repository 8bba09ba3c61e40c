"""Automations pages through the Flask test client: list (built-ins offered, added when picked), create, edit, the
switch, detail with figures and recent messages, delete, other shops' rows, the session token, and the segment edit's
automations prompt (both answers reach the log's cause); both databases."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from kinnekt.db import Session, utcnow
from kinnekt.models import Automation, Campaign, Message, Segment, SegmentEvent, Subscriber
from kinnekt.queue import get_queue
from kinnekt.segments import auto
from kinnekt.segments import service as segments
from kinnekt.tenancy import bind_shop
from kinnekt.web import segment_form
from tests.test_keywords_web import count

pytestmark = pytest.mark.usefixtures("finished_jobs")


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def manual_segment(shop, name="VIP") -> Segment:
    segment = Segment(shop_id=shop.id, name=name, kind="manual", build_status="done",
                      definition={"match": "all", "rules": [{"field": "money_spent", "op": "gt", "value": 25}]})
    Session.add(segment)
    Session.commit()
    return segment


def form(segment, **fields) -> dict:
    values = {"name": "Thank you", "trigger": "enter", "segment": str(segment.id), "delay_value": "2",
              "delay_unit": "hours", "body": "Hi {first_name}, thanks from {shop_name}!", "discount_mode": "none"}
    values.update(fields)
    return values


def created(client, auth, segment, **fields) -> Automation:
    response = client.post("/automations/", headers=auth, data=form(segment, **fields))
    assert response.status_code == 200 and "HX-Location" in response.headers
    bind_shop(None)
    Session.expire_all()
    return Session.scalar(select(Automation).order_by(Automation.id.desc()))


# ---------------------------------------------------------------------------------------------- the list

def test_the_list_offers_the_builtins_and_a_get_writes_nothing(client, auth, shop):
    auto.ensure_default_segments(Session, shop)
    segments_before = count(Segment)
    for _ in range(2):
        html = client.get("/automations/", headers=auth).get_data(as_text=True)
        assert 'id="automations-page"' in html and 'id="automation-offers"' in html
        assert 'data-builtin="welcome"' in html and 'data-builtin="winback"' in html
        assert "Sends to “All subscribers”" in html and "Sends to “No order in 90 days”" in html
    assert count(Automation) == 0 and count(Campaign) == 0 and count(Segment) == segments_before


def test_picking_a_builtin_adds_it_switched_off_once(client, auth, shop):
    auto.ensure_default_segments(Session, shop)
    response = client.post("/automations/builtins", headers=auth, data={"builtin": "winback"})
    assert response.status_code == 200 and toast(response)["message"].startswith("Added “Win-back”")
    html = response.get_data(as_text=True)
    assert "Enters No order in 90 days" in html and 'data-builtin="winback"' not in html
    assert 'data-builtin="welcome"' in html
    assert count(Automation) == 1 and count(Automation, builtin="winback", enabled=False) == 1
    assert count(Segment, name="No order in 90 days") == 1
    client.post("/automations/builtins", headers=auth, data={"builtin": "winback"})  # a double click
    assert count(Automation) == 1 and count(Segment, name="No order in 90 days") == 1

    response = client.post("/automations/builtins", headers=auth, data={"builtin": "welcome", "next": "edit"})
    welcome = Session.scalar(select(Automation).where(Automation.builtin == "welcome"))
    assert json.loads(response.headers["HX-Location"])["path"] == f"/automations/{welcome.id}/edit"
    assert count(Automation) == 2 and not welcome.enabled


def test_an_unknown_builtin_is_refused_and_adds_nothing(client, auth, shop, other_shop):
    from kinnekt.subscribers import keywords
    auto.ensure_default_segments(Session, other_shop)
    theirs = keywords.create_keyword(Session, other_shop, word="THEIRS")
    bind_shop(None)
    for key in ("nonsense", f"keyword:{theirs.id}", "welcome", ""):  # no "All subscribers" segment here yet
        response = client.post("/automations/builtins", headers=auth, data={"builtin": key})
        assert response.status_code == 200 and toast(response)["isError"] is True
        assert "not available any more" in toast(response)["message"]
    assert count(Automation) == 0


def test_the_full_page_has_the_navigation_entry(client, token_for, shop):
    html = client.get(f"/automations/?id_token={token_for(shop.domain)}").get_data(as_text=True)
    assert 'href="/automations/"' in html and "Automations" in html and 'id="automations-page"' in html


def test_the_list_shows_trigger_delay_and_figures(client, auth, shop):
    segment = manual_segment(shop)
    automation = created(client, auth, segment, body="Hi {first_name}: https://example.com/new")
    sub = Subscriber(shop_id=shop.id, phone="+12125550101", status="subscribed", source="manual")
    Session.add(sub)
    Session.commit()
    Session.add(Message(shop_id=shop.id, campaign_id=automation.campaign_id, subscriber_id=sub.id, kind="automation",
                        occurrence=7, to_phone=sub.phone, status="delivered", sent_at=utcnow()))
    Session.commit()
    html = client.get("/automations/", headers=auth).get_data(as_text=True)
    assert "Enters VIP" in html and "2 hours after" in html
    assert f'data-automation-sent="{automation.id}">1<' in html


def test_campaign_pages_do_not_show_automations(client, auth, shop):
    automation = created(client, auth, manual_segment(shop))
    assert "Thank you" not in client.get("/campaigns/", headers=auth).get_data(as_text=True)
    assert client.get(f"/campaigns/{automation.campaign_id}", headers=auth).status_code == 404


# ---------------------------------------------------------------------------------------------- the form

def test_the_new_form_reuses_the_composer_pieces(client, auth, shop):
    manual_segment(shop)
    html = client.get("/automations/new", headers=auth).get_data(as_text=True)
    for part in ('id="campaign-composer"', 'id="campaign-body"', 'id="campaign-analysis"', 'id="campaign-preview"',
                 'id="campaign-discount"', 'name="trigger"', 'name="segment"', 'name="delay_value"',
                 'name="delay_unit"', 'data-insert-tag="{first_name}"', 'hx-post="/automations/compose/message"'):
        assert part in html


def test_the_live_counter_and_preview(client, auth, shop):
    html = client.post("/automations/compose/message", headers=auth,
                       data={"body": "Hi {first_name}, welcome to {shop_name}", "discount_mode": "none"}
                       ).get_data(as_text=True)
    assert 'id="campaign-analysis"' in html and 'id="campaign-preview"' in html and "<template data-swap-by-id>" in html
    assert "welcome to Alpha" in html


def test_create_saves_a_switched_off_automation(client, auth, shop):
    segment = manual_segment(shop)
    response = client.post("/automations/", headers=auth, data=form(segment))
    assert "Created “Thank you”" in toast(response)["message"]
    automation = Session.scalar(select(Automation))
    assert automation.shop_id == shop.id and not automation.enabled and automation.delay_seconds == 7200
    assert automation.campaign.kind == "automation" and automation.campaign.status == "draft"


def test_bad_input_comes_back_with_errors_and_saves_nothing(client, auth, shop):
    segment = manual_segment(shop)
    html = client.post("/automations/", headers=auth,
                       data=form(segment, name="", body="Hi {frist_name}", delay_value="x")).get_data(as_text=True)
    assert 'id="automation-name-error"' in html and 'id="campaign-body-error"' in html
    assert 'id="automation-delay-error"' in html and "Fix the highlighted fields." in html
    assert "Unknown merge tag {frist_name}" in html
    assert count(Automation) == 0 and count(Campaign) == 0


def test_edit_shows_and_saves_the_automation(client, auth, shop):
    segment = manual_segment(shop)
    automation = created(client, auth, segment, delay_value="3", delay_unit="days")
    html = client.get(f"/automations/{automation.id}/edit", headers=auth).get_data(as_text=True)
    assert 'value="Thank you"' in html and 'value="3"' in html and '<option value="days" selected>' in html
    assert 'id="automation-waiting"' not in html
    bind_shop(None)
    for occurrence, status in ((1, "pending"), (2, "claimed"), (3, "sent")):
        Session.add(Message(shop_id=shop.id, campaign_id=automation.campaign_id, kind="automation",
                            occurrence=occurrence, to_phone="+12125550101", status=status))
    Session.commit()
    html = client.get(f"/automations/{automation.id}/edit", headers=auth).get_data(as_text=True)
    assert "2 messages are waiting for the delay" in " ".join(html.split())  # sent with the text as saved
    response = client.post(f"/automations/{automation.id}", headers=auth,
                           data=form(segment, name="Merci", trigger="leave", delay_value="0"))
    assert "Saved “Merci”" in toast(response)["message"]
    bind_shop(None)
    Session.expire_all()
    automation = Session.get(Automation, automation.id)
    assert (automation.name, automation.trigger, automation.delay_seconds) == ("Merci", "leave", 0)
    assert automation.campaign.name == "Merci"


def test_a_bad_edit_changes_nothing(client, auth, shop):
    automation = created(client, auth, manual_segment(shop))
    html = client.post(f"/automations/{automation.id}", headers=auth,
                       data=form(manual_segment(shop, "Other"), name="New name", body="")).get_data(as_text=True)
    assert 'id="campaign-body-error"' in html
    bind_shop(None)
    Session.expire_all()
    assert Session.get(Automation, automation.id).name == "Thank you"


# ---------------------------------------------------------------------------------------------- switch, detail, delete

def test_the_switch_turns_an_automation_on_and_off(client, auth, shop):
    automation = created(client, auth, manual_segment(shop))
    Session.add(SegmentEvent(shop_id=shop.id, segment_id=automation.segment_id, subscriber_id=1, kind="enter",
                             cause="recheck"))
    Session.commit()
    newest = Session.scalar(select(func.max(SegmentEvent.id)))
    response = client.post(f"/automations/{automation.id}/enabled", headers=auth, data={"enabled": "1"})
    assert response.status_code == 200 and "“Thank you” is on" == toast(response)["message"]
    assert 'id="automations-page"' in response.get_data(as_text=True)
    bind_shop(None)
    Session.expire_all()
    automation = Session.get(Automation, automation.id)
    assert automation.enabled and automation.last_event_id == newest and automation.enabled_at is not None
    assert automation.campaign.status == "in_progress" and automation.campaign.started_at is not None

    response = client.post(f"/automations/{automation.id}/enabled", headers=auth, data={"from": "detail"})
    assert 'id="automation-detail-page"' in response.get_data(as_text=True)
    bind_shop(None)
    Session.expire_all()
    automation = Session.get(Automation, automation.id)
    assert not automation.enabled and automation.campaign.status == "draft"


def test_the_detail_page_shows_figures_and_recent_messages(client, auth, shop):
    automation = created(client, auth, manual_segment(shop))
    sub = Subscriber(shop_id=shop.id, phone="+12125550177", status="subscribed", source="manual")
    Session.add(sub)
    Session.commit()
    Session.add_all([
        Message(shop_id=shop.id, campaign_id=automation.campaign_id, subscriber_id=sub.id, kind="automation",
                occurrence=1, to_phone=sub.phone, status="sent", sent_at=utcnow()),
        Message(shop_id=shop.id, campaign_id=automation.campaign_id, subscriber_id=sub.id, kind="automation",
                occurrence=2, to_phone=sub.phone, status="skipped", skip_reason="unsubscribed")])
    Session.commit()
    html = client.get(f"/automations/{automation.id}", headers=auth).get_data(as_text=True)
    assert 'id="automation-detail-page"' in html and 'id="stat-sent"' in html and "Enters VIP" in html
    runs = html.split('id="automation-runs"', 1)[1]
    assert "0177" in runs and "+12125550177" not in runs and "Sent" in runs and "Skipped" in runs


def test_delete_asks_then_deletes_the_automation_and_its_campaign(client, auth, shop):
    automation = created(client, auth, manual_segment(shop))
    html = client.get(f"/automations/{automation.id}/delete", headers=auth).get_data(as_text=True)
    assert "<dialog" in html and f'hx-delete="/automations/{automation.id}"' in html
    assert count(Automation) == 1
    response = client.delete(f"/automations/{automation.id}", headers=auth)
    assert "HX-Location" in response.headers and "Deleted “Thank you”" == toast(response)["message"]
    assert count(Automation) == 0 and count(Campaign) == 0


def test_another_shops_automation_is_a_404(client, auth, shop, other_shop):
    theirs = manual_segment(other_shop, "Theirs")
    campaign = Campaign(shop_id=other_shop.id, name="Theirs", kind="automation", body="Hi")
    automation = Automation(shop_id=other_shop.id, name="Theirs", campaign=campaign, segment_id=theirs.id)
    Session.add_all([campaign, automation])
    Session.commit()
    automation_id = automation.id
    for method, url, data in (("get", f"/automations/{automation_id}", None),
                              ("get", f"/automations/{automation_id}/edit", None),
                              ("post", f"/automations/{automation_id}", form(theirs)),
                              ("post", f"/automations/{automation_id}/enabled", {"enabled": "1"}),
                              ("get", f"/automations/{automation_id}/delete", None),
                              ("delete", f"/automations/{automation_id}", None)):
        assert getattr(client, method)(url, headers=auth, data=data).status_code == 404
    bind_shop(None)
    Session.expire_all()
    kept = Session.get(Automation, automation_id)
    assert kept is not None and kept.name == "Theirs" and not kept.enabled


def test_every_page_needs_a_session_token(client, shop):
    for method, url in (("get", "/automations/"), ("get", "/automations/new"), ("post", "/automations/"),
                        ("post", "/automations/1/enabled"), ("delete", "/automations/1"),
                        ("post", "/automations/compose/message"), ("post", "/automations/builtins")):
        response = getattr(client, method)(url, headers={"HX-Request": "true"})
        assert response.status_code in (401, 403)
    assert count(Automation) == 0


# ---------------------------------------------------------------------------------------------- the segment edit prompt

def _builder_form(definition, name, segment_id) -> MultiDict:
    pairs = segment_form.form_data(segment_form.definition_to_tree(definition), name)
    pairs.append(("segment_id", str(segment_id)))
    return MultiDict(pairs)


NOBODY = {"match": "all", "rules": [{"field": "sent_count", "op": "gt", "value": 5}]}
EVERYBODY = {"match": "all", "rules": [{"field": "sent_count", "op": "eq", "value": 0}]}


@pytest.fixture
def watched(client, auth, shop):
    """A built segment that an enabled automation uses, and a subscriber who enters it when it is edited."""
    Session.add(Subscriber(shop_id=shop.id, phone="+12125550111", status="subscribed", source="manual"))
    Session.commit()
    segment = segments.create_segment(Session, shop, name="Nobody", definition=NOBODY)
    assert get_queue().drain(60)
    automation = created(client, auth, segment)
    client.post(f"/automations/{automation.id}/enabled", headers=auth, data={"enabled": "1"})
    bind_shop(None)
    Session.expire_all()
    return Session.get(Segment, segment.id), Session.get(Automation, automation.id)


def _causes(segment_id) -> set[str]:
    assert get_queue().drain(60)
    bind_shop(None)
    Session.expire_all()
    return set(Session.scalars(select(SegmentEvent.cause).where(SegmentEvent.segment_id == segment_id)))


def test_editing_a_segment_of_an_enabled_automation_asks_first_and_saves_nothing(client, auth, shop, watched):
    segment, automation = watched
    html = client.post(f"/segments/{segment.id}", headers=auth,
                       data=_builder_form(EVERYBODY, "Nobody", segment.id)).get_data(as_text=True)
    assert 'id="segment-automations-prompt"' in html and "Thank you" in html
    assert 'name="automations_asked" value="1"' in html
    assert 'name="trigger_automations"' in html and 'name="trigger_automations" value="on" checked' not in html
    bind_shop(None)
    Session.expire_all()
    assert Session.get(Segment, segment.id).definition == segments.validate(NOBODY, shop_id=shop.id,
                                                                            session=Session)
    assert _causes(segment.id) == set()


def test_the_prompt_also_names_automations_of_segments_that_refer_to_the_edited_one(client, auth, shop, watched):
    segment, automation = watched
    outer = segments.create_segment(Session, shop, name="Outer", definition={
        "match": "all", "rules": [{"field": "segment", "op": "in", "value": segment.id}]})
    assert get_queue().drain(60)
    theirs = created(client, auth, Session.get(Segment, outer.id), name="Outer welcome")
    client.post(f"/automations/{theirs.id}/enabled", headers=auth, data={"enabled": "1"})
    html = client.post(f"/segments/{segment.id}", headers=auth,
                       data=_builder_form(EVERYBODY, "Nobody", segment.id)).get_data(as_text=True)
    listed = html[html.index('id="segment-automations-prompt"'):]
    assert "Thank you" in listed and "Outer welcome" in listed and "(on “Outer”)" in listed
    assert listed.index("Thank you") < listed.index("Outer welcome")  # the segment's own first


@pytest.mark.parametrize("answer, cause", [(None, "edit"), ("on", "edit_trigger")])
def test_the_answer_reaches_the_logs_cause(client, auth, shop, watched, answer, cause):
    segment, _ = watched
    data = _builder_form(EVERYBODY, "Nobody", segment.id)
    data.add("automations_asked", "1")
    if answer:
        data.add("trigger_automations", answer)
    response = client.post(f"/segments/{segment.id}", headers=auth, data=data)
    assert "HX-Location" in response.headers
    assert _causes(segment.id) == {cause}


def test_no_question_without_an_enabled_automation_or_a_rule_change(client, auth, shop, watched):
    segment, automation = watched
    response = client.post(f"/segments/{segment.id}", headers=auth, data=_builder_form(NOBODY, "Renamed", segment.id))
    assert "HX-Location" in response.headers  # a rename alone asks nothing
    client.post(f"/automations/{automation.id}/enabled", headers=auth, data={})
    response = client.post(f"/segments/{segment.id}", headers=auth,
                           data=_builder_form(EVERYBODY, "Renamed", segment.id))
    assert "HX-Location" in response.headers  # switched off: nothing to ask
    assert _causes(segment.id) == {"edit"}


def test_deleting_a_segment_names_its_automation(client, auth, shop, watched):
    segment, _ = watched
    html = client.get(f"/segments/{segment.id}/delete", headers=auth).get_data(as_text=True)
    assert "Automation “Thank you” (On)" in html
