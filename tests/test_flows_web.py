"""The flows page through the Flask test client: the list with figures, ready-made flows added off, the switch,
bad input and other shops' flows, the session token; both databases."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session, utcnow
from kinnekt.flows import service
from kinnekt.models import Flow, FlowRun
from kinnekt.models.flow import RunState
from kinnekt.tenancy import bind_shop
from tests import factories

pytestmark = pytest.mark.usefixtures("finished_jobs")


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def flows() -> list[Flow]:
    bind_shop(None)
    Session.expire_all()
    return list(Session.scalars(select(Flow).order_by(Flow.id)))


def test_the_list_offers_the_ready_made_flows_and_a_get_writes_nothing(client, auth, shop):
    for _ in range(2):
        html = client.get("/flows/", headers=auth).get_data(as_text=True)
        assert 'id="flows-page"' in html and 'id="flow-offers"' in html and "No flows yet" in html
        assert all(f'data-builtin="{key}"' in html for key in service.BUILTINS)
    assert flows() == []
    partial = client.get("/flows/", headers={**auth, "HX-Request": "true"}).get_data(as_text=True)
    assert partial.lstrip().startswith("<section id=\"flows-page\"")


def test_adding_a_ready_made_flow_then_switching_it_on_and_off(client, auth, shop):
    response = client.post("/flows/builtins", headers=auth, data={"builtin": "abandoned_checkout"})
    assert response.status_code == 200 and not toast(response)["isError"]
    [flow] = flows()
    assert (flow.name, flow.status, flow.builtin) == ("Abandoned checkout", "off", "abandoned_checkout")
    html = response.get_data(as_text=True)
    assert "Starts a checkout and does not complete it" in html and 'data-builtin="abandoned_checkout"' not in html
    again = client.post("/flows/builtins", headers=auth, data={"builtin": "abandoned_checkout"})
    assert again.status_code == 200 and toast(again)["isError"] and len(flows()) == 1
    assert client.post(f"/flows/{flow.id}/status", headers=auth, data={"on": "1"}).status_code == 200
    assert flows()[0].status == "on"
    assert client.post(f"/flows/{flow.id}/status", headers=auth, data={}).status_code == 200
    assert flows()[0].status == "off"


@pytest.mark.parametrize("builtin", ["", "nope", "x" * 5000])
def test_an_unknown_ready_made_flow_is_a_clear_error_and_saves_nothing(client, auth, shop, builtin):
    response = client.post("/flows/builtins", headers=auth, data={"builtin": builtin})
    assert response.status_code == 200 and toast(response)["isError"]
    assert flows() == []


def test_a_nul_character_is_refused_before_the_view(client, auth, shop):
    response = client.post("/flows/builtins", headers=auth, data={"builtin": "welcome_series\x00"})
    assert response.status_code == 400 and flows() == []


def test_the_figures_count_the_shops_runs(client, auth, shop, db):
    flow = service.create(db, shop, name="Hello", trigger="subscribed", steps=[{"kind": "send", "body": "Hi"}])
    people = [factories.subscriber(db, shop) for _ in range(3)]
    for person, state in zip(people, (RunState.ACTIVE, RunState.COMPLETED, RunState.EXITED)):
        db.add(FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=person.id, version=1, state=state,
                       trigger_key=f"t{person.id}", started_at=utcnow()))
    db.commit()
    html = client.get("/flows/", headers={**auth, "HX-Request": "true"}).get_data(as_text=True)
    assert "Hello" in html and "Subscribes" in html
    assert html.count('<td class="numeric">1</td>') >= 4  # steps, waiting, completed, left early


def test_another_shops_flow_is_a_404_and_the_token_is_required(client, auth, shop, other_shop, db):
    theirs = service.create(db, other_shop, name="Theirs", trigger="subscribed",
                            steps=[{"kind": "send", "body": "Hi"}])
    assert client.post(f"/flows/{theirs.id}/status", headers=auth, data={"on": "1"}).status_code == 404
    assert "Theirs" not in client.get("/flows/", headers=auth).get_data(as_text=True)
    assert client.get("/flows/").status_code in (401, 302, 303)
    assert client.post(f"/flows/{theirs.id}/status", data={"on": "1"}).status_code in (401, 302, 303)
    bind_shop(None)
    assert Session.scalar(select(func.count()).select_from(Flow).where(Flow.status == "on")) == 0


def test_the_list_shows_each_flow_with_runs_by_step(client, auth, shop):
    from tests.test_flow_engine import place, steps_of
    flow = service.add_builtin(Session, shop, "abandoned_checkout")
    service.set_status(Session, flow, True, now=utcnow())
    wait_step = steps_of(Session, flow)[0]
    for _ in range(3):
        place(Session, flow, factories.subscriber(Session, shop), wait_step, due=utcnow() + dt.timedelta(hours=1))
    other = service.add_builtin(Session, shop, "post_purchase")  # no runs: no results card
    html = client.get("/flows/", headers=auth).get_data(as_text=True)
    assert f'id="flow-steps-{flow.id}"' in html and f'id="flow-steps-{other.id}"' not in html
    row = html.split(f'data-step="{wait_step.id}"', 1)[1].split("</tr>", 1)[0]
    assert [cell.split(">")[-1] for cell in row.split("</td>")[1:3]] == ["3", "3"]  # entered, here now
    assert "3 entered · 0 sent" in html


# ---------------------------------------------------------------------------------------------- the flow's page

def test_the_flows_page_shows_status_trigger_steps_with_figures_and_recent_runs(client, auth, token_for, shop, db):
    from tests.test_flow_engine import steps_of
    flow = service.add_builtin(db, shop, "welcome_series")
    service.set_status(db, flow, True, now=utcnow())
    welcome, wait, condition, reminder = steps_of(db, flow)
    ann, bob, cyd = (factories.subscriber(db, shop, phone=f"+1212555019{n}") for n in range(3))
    now = utcnow()
    db.add_all([
        FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=ann.id, version=1, state=RunState.ACTIVE,
                current_step_id=condition.id, due_at=now + dt.timedelta(days=2), trigger_key="a",
                started_at=now - dt.timedelta(days=1)),
        FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=bob.id, version=1, state=RunState.COMPLETED,
                current_step_id=reminder.id, trigger_key="b", started_at=now - dt.timedelta(days=5),
                finished_at=now),
        FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=cyd.id, version=1, state=RunState.EXITED,
                exit_reason="unsubscribed", current_step_id=wait.id, trigger_key="c",
                started_at=now - dt.timedelta(days=3), finished_at=now)])
    db.commit()
    html = client.get(f"/flows/{flow.id}", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="flow-detail"') and "Welcome series" in html
    assert 'id="flow-detail-switch"' in html and "checked" in html.split('id="flow-detail-switch"')[0][-400:]
    assert "Subscribes" in html and "They unsubscribe" in html
    steps = html[html.index('id="flow-step-results"'):html.index('id="flow-runs"')]
    assert "Text: Welcome to {shop_name}" in steps and "Wait 3 days" in steps
    assert "If Number of orders" in steps and "Yes: Text: {shop_name}: your welcome code" in steps
    condition_row = steps.split(f'data-step="{condition.id}"', 1)[1].split("</tr>", 1)[0]
    assert [c.split(">")[-1] for c in condition_row.split("</td>")[1:3]] == ["2", "1"]  # Ann and Bob; Ann here
    runs = html[html.index('id="flow-runs"'):]
    assert runs.index("0190") < runs.index("0192") < runs.index("0191")  # newest first (masked phones)
    assert "Waiting" in runs and "Completed" in runs and "Left early: unsubscribed" in runs
    assert f'href="/subscribers/{ann.id}"' in runs
    assert ">3 · yes 1<" in runs and ">3<" in runs and ">2<" in runs  # where each stands, numbered as the editor
    full = client.get(f"/flows/{flow.id}?id_token={token_for(shop.domain)}").get_data(as_text=True)
    assert "<title>" in full and '<section id="flow-detail"' in full


def test_the_list_links_each_flow_to_its_page_and_the_switch_there_answers_with_it(client, auth, shop, db):
    flow = service.create(db, shop, name="Hello", trigger="subscribed", steps=[{"kind": "send", "body": "Hi"}])
    assert f'href="/flows/{flow.id}"' in client.get("/flows/", headers=auth).get_data(as_text=True)
    html = client.get(f"/flows/{flow.id}", headers=auth).get_data(as_text=True)
    assert "Nobody has entered this flow yet: switch it on to start" in html
    assert f'href="/flows/{flow.id}/edit"' in html
    response = client.post(f"/flows/{flow.id}/status", headers={**auth, "HX-Request": "true"},
                           data={"on": "1", "from": "detail"})
    assert response.status_code == 200 and toast(response)["message"] == "“Hello” is on"
    assert response.get_data(as_text=True).lstrip().startswith('<section id="flow-detail"')
    assert flows()[0].status == "on"


def test_another_shops_flow_page_is_a_404_and_a_get_writes_nothing(client, auth, shop, other_shop, db):
    theirs = service.create(db, other_shop, name="Theirs", trigger="subscribed",
                            steps=[{"kind": "send", "body": "Hi"}])
    assert client.get(f"/flows/{theirs.id}", headers=auth).status_code == 404
    assert client.get("/flows/99999999999999999999", headers=auth).status_code == 404
    assert client.get(f"/flows/{theirs.id}").status_code in (401, 302, 303)


def test_win_back_is_a_ready_made_flow_on_its_own_segment(client, auth, shop, db):
    from kinnekt.automations.service import WINBACK_DEFINITION, WINBACK_SEGMENT, WINBACK_TEXT
    from kinnekt.models import Segment
    response = client.post("/flows/builtins", headers=auth, data={"builtin": "winback"})
    assert response.status_code == 200 and not toast(response)["isError"]
    [flow] = flows()
    segment = Session.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.name == WINBACK_SEGMENT))
    assert segment is not None and segment.definition["rules"] == WINBACK_DEFINITION["rules"]
    assert (flow.name, flow.trigger, flow.segment_id, flow.status) == ("Win-back", "segment_enter", segment.id, "off")
    assert service.describe(Session, flow) == [{"kind": "send", "body": WINBACK_TEXT, "discount_mode": "none"}]
    # Deleted and added again: the segment of that name is reused, not made twice.
    Session.delete(Session.get(Flow, flow.id))
    Session.commit()
    Session.expunge_all()  # its steps went with it (ON DELETE CASCADE), not through the session
    client.post("/flows/builtins", headers=auth, data={"builtin": "winback"})
    assert len(flows()) == 1 and Session.scalar(select(func.count()).select_from(Segment).where(
        Segment.shop_id == shop.id, Segment.name == WINBACK_SEGMENT)) == 1
