"""The old Automations pages after automations became flows (migration 0026): every old address goes to the flows
(htmx gets HX-Location, a plain request a 308 keeping the session token), the navigation has Flows only, campaign
pages do not show flows' messages, and the segment edit's prompt names the flows it would start (both answers reach
the log's cause); deleting a segment names its flows and switches them off. Both databases."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from kinnekt.db import Session
from kinnekt.flows import service as flows
from kinnekt.models import Campaign, Flow, Segment, SegmentEvent, Subscriber
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.flow import FlowStatus
from kinnekt.queue import get_queue
from kinnekt.segments import service as segments
from kinnekt.tenancy import bind_shop
from kinnekt.web import segment_form
from tests.test_keywords_web import count

pytestmark = pytest.mark.usefixtures("finished_jobs")

HX = {"HX-Request": "true"}


# ---------------------------------------------------------------------------------------------- redirects

@pytest.mark.parametrize("path, target", [("/automations/", "/flows/"), ("/automations/new", "/flows/new"),
                                          ("/automations/12", "/flows/"), ("/automations/12/edit", "/flows/")])
def test_old_addresses_go_to_the_flows(client, auth, token_for, shop, path, target):
    response = client.get(path, headers={**auth, **HX})
    assert response.status_code == 200 and f'"path": "{target}"' in response.headers["HX-Location"]
    token = token_for(shop.domain)
    response = client.get(f"{path}?id_token={token}")
    assert response.status_code == 308
    assert response.headers["Location"] == f"{target}?id_token={token}"
    assert client.get(response.headers["Location"]).status_code == 200


def test_old_actions_go_to_the_flows_and_write_nothing(client, auth, shop):
    for method, path in (("post", "/automations/"), ("post", "/automations/3/enabled"), ("delete", "/automations/3"),
                         ("post", "/automations/builtins")):
        response = getattr(client, method)(path, headers={**auth, **HX}, data={"builtin": "welcome", "enabled": "1"})
        assert response.status_code == 200 and '"/flows/"' in response.headers["HX-Location"]
    assert count(Flow) == 0 and count(Campaign) == 0


def test_old_addresses_still_need_a_session_token(client, shop):
    for method, path in (("get", "/automations/"), ("get", "/automations/new"), ("post", "/automations/1/enabled")):
        assert getattr(client, method)(path, headers=HX).status_code in (401, 403)


def test_the_navigation_has_flows_and_no_automations(client, token_for, shop):
    html = client.get(f"/flows/?id_token={token_for(shop.domain)}").get_data(as_text=True)
    assert 'href="/flows/"' in html and 'href="/automations/"' not in html


def test_campaign_pages_do_not_show_flows_messages(client, auth, shop):
    flow = flows.create(Session, shop, name="Thanks", trigger="subscribed", steps=[{"kind": "send", "body": "Hi"}])
    [campaign_id] = flows.campaign_ids(Session, flow)
    assert "Thanks: message 1" not in client.get("/campaigns/", headers=auth).get_data(as_text=True)
    assert client.get(f"/campaigns/{campaign_id}", headers=auth).status_code == 404


# ---------------------------------------------------------------------------------------------- the segment edit prompt

def _builder_form(definition, name, segment_id) -> MultiDict:
    pairs = segment_form.form_data(segment_form.definition_to_tree(definition), name)
    pairs.append(("segment_id", str(segment_id)))
    return MultiDict(pairs)


NOBODY = {"match": "all", "rules": [{"field": "sent_count", "op": "gt", "value": 5}]}
EVERYBODY = {"match": "all", "rules": [{"field": "sent_count", "op": "eq", "value": 0}]}


def _flow_on(shop, segment, name="Thank you") -> Flow:
    flow = flows.create(Session, shop, name=name, trigger="segment_enter", segment_id=segment.id,
                        steps=[{"kind": "send", "body": "Hi {first_name}"}])
    flows.set_status(Session, flow, True)
    return flow


@pytest.fixture
def watched(client, auth, shop):
    """A built segment that a flow that is on starts from, and a subscriber who enters it when it is edited."""
    Session.add(Subscriber(shop_id=shop.id, phone="+12125550111", status="subscribed", source="manual"))
    Session.commit()
    segment = segments.create_segment(Session, shop, name="Nobody", definition=NOBODY)
    assert get_queue().drain(60)
    flow = _flow_on(shop, segment)
    bind_shop(None)
    Session.expire_all()
    return Session.get(Segment, segment.id), Session.get(Flow, flow.id)


def _causes(segment_id) -> set[str]:
    assert get_queue().drain(60)
    bind_shop(None)
    Session.expire_all()
    return set(Session.scalars(select(SegmentEvent.cause).where(SegmentEvent.segment_id == segment_id)))


def test_editing_a_segment_a_flow_starts_from_asks_first_and_saves_nothing(client, auth, shop, watched):
    segment, flow = watched
    html = client.post(f"/segments/{segment.id}", headers=auth,
                       data=_builder_form(EVERYBODY, "Nobody", segment.id)).get_data(as_text=True)
    assert 'id="segment-automations-prompt"' in html and "This segment starts flows" in html
    assert f'href="/flows/{flow.id}">Thank you</a>' in html
    assert 'name="automations_asked" value="1"' in html
    assert 'name="trigger_automations"' in html and 'name="trigger_automations" value="on" checked' not in html
    bind_shop(None)
    Session.expire_all()
    assert Session.get(Segment, segment.id).definition == segments.validate(NOBODY, shop_id=shop.id,
                                                                            session=Session)
    assert _causes(segment.id) == set()


def test_the_prompt_also_names_flows_of_segments_that_refer_to_the_edited_one(client, auth, shop, watched):
    segment, _ = watched
    outer = segments.create_segment(Session, shop, name="Outer", definition={
        "match": "all", "rules": [{"field": "segment", "op": "in", "value": segment.id}]})
    assert get_queue().drain(60)
    _flow_on(shop, Session.get(Segment, outer.id), name="Outer welcome")
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


def test_no_question_without_a_flow_on_or_a_rule_change(client, auth, shop, watched):
    segment, flow = watched
    response = client.post(f"/segments/{segment.id}", headers=auth, data=_builder_form(NOBODY, "Renamed", segment.id))
    assert "HX-Location" in response.headers  # a rename alone asks nothing
    client.post(f"/flows/{flow.id}/status", headers=auth, data={})
    response = client.post(f"/segments/{segment.id}", headers=auth,
                           data=_builder_form(EVERYBODY, "Renamed", segment.id))
    assert "HX-Location" in response.headers  # switched off: nothing to ask
    assert _causes(segment.id) == {"edit"}


def test_deleting_a_segment_names_its_flow_and_switches_it_off(client, auth, shop, watched):
    segment, flow = watched
    html = client.get(f"/segments/{segment.id}/delete", headers=auth).get_data(as_text=True)
    assert "Flow “Thank you” (On)" in html
    response = client.delete(f"/segments/{segment.id}", headers=auth, data={"confirmed": "1"})
    assert response.status_code in (200, 303)
    bind_shop(None)
    Session.expire_all()
    assert Session.get(Segment, segment.id) is None
    gone = Session.get(Flow, flow.id)
    assert (gone.status, gone.segment_id) == (FlowStatus.OFF, None)
    assert {c.status for c in Session.scalars(select(Campaign).where(
        Campaign.id.in_(flows.campaign_ids(Session, gone))))} == {CampaignStatus.DRAFT}
