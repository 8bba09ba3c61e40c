"""The flow editor through the Flask test client: a flow's steps shown in order, structural edits (add, remove,
move) that save nothing, saving a new version (waiting runs keep theirs or move, as chosen), a new flow, the live
preview's encoding, parts and cost, bad input refused with its reason and nothing saved, tampered forms, other
shops' flows and the session token; both databases."""
from __future__ import annotations

import json
import re
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from kinnekt.campaigns import composer
from kinnekt.db import Session, utcnow
from kinnekt.flows import engine, service
from kinnekt.models import Campaign, Flow, FlowRun, FlowStep, Message
from kinnekt.models.flow import RunState
from kinnekt.tenancy import bind_shop
from kinnekt.web import flow_form, segment_form
from tests import factories

pytestmark = pytest.mark.usefixtures("finished_jobs")

HX = {"HX-Request": "true"}


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def fresh(flow_id: int) -> Flow:
    bind_shop(None)
    Session.expire_all()
    return Session.get(Flow, flow_id)


def counts() -> tuple[int, int, int]:
    """Flows, steps and campaigns in the database."""
    bind_shop(None)
    Session.expire_all()
    return tuple(Session.scalar(select(func.count()).select_from(model)) for model in (Flow, FlowStep, Campaign))


def form_of(steps, **settings) -> dict[str, list[str]]:
    """The form the editor posts for a description (service's shape) and settings."""
    draft = flow_form.Draft({"name": "Checkout rescue", "trigger": "checkout_started", "segment_id": "",
                             "keyword": "", "cooldown_amount": "1", "cooldown_unit": "days",
                             "exits": ["order"], "runs": "keep"}, [flow_form.step_from_spec(s) for s in steps])
    draft.settings.update(settings)
    form: dict[str, list[str]] = {key: [str(value)] for key, value in draft.settings.items() if key != "exits"}
    form["exits"] = list(draft.settings["exits"])

    def put(lane, prefix):
        for index, step in enumerate(lane):
            path = f"{prefix}{index}"
            form[f"s{path}-kind"] = [step.kind]
            for part, value in step.values.items():
                form[f"s{path}-{part}"] = [value]
            put(step.yes, f"{path}-yes-")
            put(step.no, f"{path}-no-")
    put(draft.steps, "")
    flow_form.key_trees(draft.steps)  # a "rules" condition: the segment builder's inputs, its root keyed by path
    for tree in flow_form.trees(draft.steps):
        for name, value in segment_form.form_data(tree)[1:]:  # not the builder's own name input
            form.setdefault(name, []).append(value)
    return form


def kinds(html: str) -> list[tuple[str, str]]:
    """(path, kind) of every step the editor shows, in document order."""
    return re.findall(r'data-step="([^"]+)"\s+data-kind="([a-z]+)"', html)


RESCUE = [{"kind": "wait", "seconds": 1800}, {"kind": "send", "body": "Forgot something? {checkout_url}"}]


def test_the_editor_shows_a_flows_steps_top_to_bottom_with_branches_and_a_get_writes_nothing(client, auth, shop, db):
    flow = service.add_builtin(db, shop, "welcome_series")
    before = counts()
    html = client.get(f"/flows/{flow.id}/edit", headers=auth).get_data(as_text=True)
    assert 'id="flow-editor"' in html and "Welcome to {shop_name}" in html
    assert kinds(html) == [("0", "send"), ("1", "wait"), ("2", "condition"), ("2-yes-0", "send")]
    assert 'data-branch="2-yes"' in html and 'data-branch="2-no"' in html
    assert 'value="3"' in html and 'value="days" selected' in html  # the 3-day wait in days
    assert counts() == before and fresh(flow.id).version == 1
    partial = client.get(f"/flows/{flow.id}/edit", headers={**auth, **HX}).get_data(as_text=True)
    assert partial.lstrip().startswith('<form id="flow-editor"')


@pytest.mark.parametrize("op, expected", [
    ("add-top-end", [("0", "wait"), ("1", "send"), ("2", "end")]),
    ("add-top-condition", [("0", "wait"), ("1", "send"), ("2", "condition")]),
    ("remove-0", [("0", "send")]),
    ("up-1", [("0", "send"), ("1", "wait")]),
    ("down-0", [("0", "send"), ("1", "wait")]),
    ("up-0", [("0", "wait"), ("1", "send")]),  # the first step cannot go higher: nothing moves
    ("refresh", [("0", "wait"), ("1", "send")]),
])
def test_structural_edits_redraw_the_editor_and_save_nothing(client, auth, shop, db, op, expected):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    response = client.post(f"/flows/{flow.id}/draft", headers={**auth, **HX}, data={**form_of(RESCUE), "op": op})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert kinds(html) == expected
    assert "Forgot something? {checkout_url}" in html  # what was typed survives the redraw
    assert counts() == before and fresh(flow.id).version == 1


def test_steps_are_added_inside_a_branch_and_moved_there(client, auth, shop, db):
    steps = [{"kind": "send", "body": "Hi"}, {"kind": "condition", "definition": {
        "match": "all", "rules": [{"field": "number_of_orders", "op": "eq", "value": 0}]},
        "yes": [{"kind": "wait", "seconds": 60}], "no": []}]
    html = client.post("/flows/draft", headers={**auth, **HX},
                       data={**form_of(steps), "op": "add-1-yes-send"}).get_data(as_text=True)
    assert kinds(html) == [("0", "send"), ("1", "condition"), ("1-yes-0", "wait"), ("1-yes-1", "send")]
    form = form_of(steps)
    form.update({"s1-yes-1-kind": ["send"], "s1-yes-1-body": ["Come back"], "op": ["up-1-yes-1"]})
    html = client.post("/flows/draft", headers={**auth, **HX}, data=form).get_data(as_text=True)
    assert kinds(html) == [("0", "send"), ("1", "condition"), ("1-yes-0", "send"), ("1-yes-1", "wait")]
    assert counts() == (0, 0, 0)


def test_saving_writes_a_new_version_and_waiting_runs_keep_theirs_or_move(client, auth, shop, db):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    service.set_status(db, flow, True)
    old_wait, old_send = db.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id).order_by(FlowStep.id)).all()
    people = [factories.subscriber(db, shop) for _ in range(2)]
    due = utcnow()
    for person in people:
        db.add(FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=person.id, version=1, state=RunState.ACTIVE,
                       current_step_id=old_send.id, due_at=due, trigger_key=f"t{person.id}", started_at=due))
    db.commit()
    edited = [{"kind": "wait", "seconds": 3600}, {"kind": "send", "body": "Still there? {checkout_url}"},
              {"kind": "end"}]
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX},
                           data=form_of(edited, name="Rescue 2", cooldown_amount="2", runs="keep"))
    assert response.status_code == 200 and not toast(response)["isError"], toast(response)
    assert "2 kept theirs" in toast(response)["message"]
    flow = fresh(flow.id)
    assert (flow.version, flow.name, flow.reentry_cooldown_seconds, flow.exit_conditions) == (2, "Rescue 2",
                                                                                             2 * 86400, ["order"])
    assert [s["kind"] for s in service.describe(Session, flow)] == ["wait", "send", "end"]
    new_send = Session.scalar(select(FlowStep).where(FlowStep.flow_id == flow.id, FlowStep.version == 2,
                                                     FlowStep.kind == "send"))
    assert Session.get(Campaign, new_send.campaign_id).status == "in_progress"  # the flow is on
    assert {r.version for r in Session.scalars(select(FlowRun))} == {1}

    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form_of(edited, runs="move"))
    assert "2 moved to this version" in toast(response)["message"]
    flow = fresh(flow.id)
    third_send = Session.scalar(select(FlowStep).where(FlowStep.flow_id == flow.id, FlowStep.version == 3,
                                                       FlowStep.kind == "send"))
    moved = Session.scalars(select(FlowRun)).all()
    assert {(r.version, r.current_step_id) for r in moved} == {(3, third_send.id)}
    assert {r.due_at for r in moved} == {due}  # when they are due does not change


def test_a_run_whose_place_the_new_version_lacks_keeps_its_version(client, auth, shop, db):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    _, old_send = db.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id).order_by(FlowStep.id)).all()
    person = factories.subscriber(db, shop)
    db.add(FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=person.id, version=1, state=RunState.ACTIVE,
                   current_step_id=old_send.id, due_at=utcnow(), trigger_key="t", started_at=utcnow()))
    db.commit()
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX},
                           data=form_of([{"kind": "send", "body": "Only this"}], runs="move"))
    assert "0 moved to this version, 1 kept theirs" in toast(response)["message"]
    bind_shop(None)
    assert Session.scalar(select(FlowRun.version)) == 1


def test_a_new_flow_is_saved_off_from_the_editor(client, auth, shop, db):
    vip = factories.segment(db, shop, factories.where(factories.rule("number_of_orders", "gt", 3)), name="VIP")
    html = client.get("/flows/new", headers=auth).get_data(as_text=True)
    assert kinds(html) == [("0", "wait"), ("1", "send")] and counts() == (0, 0, 0)
    steps = [{"kind": "send", "body": "Hi {{ first_name }}"},  # the Liquid way: stored as {first_name}
             {"kind": "wait", "until": "10:00"},
             {"kind": "condition", "definition": {"match": "all", "rules": [
                 {"field": "number_of_orders", "op": "gt", "value": 0}]},
              "yes": [{"kind": "condition", "definition": factories.where(factories.rule("segment", "in", vip.id)),
                       "yes": [{"kind": "send", "body": "Thanks, VIP"}], "no": [{"kind": "end"}]}],
              "no": [{"kind": "send", "body": "Need help choosing?"}]}]
    response = client.post("/flows/", headers={**auth, **HX},
                           data=form_of(steps, name="Greeting", trigger="subscribed", keyword="join",
                                        exits=["unsubscribed"], cooldown_amount="0"))
    assert not toast(response)["isError"], response.get_data(as_text=True)
    flow = Session.scalar(select(Flow))
    assert (flow.name, flow.trigger, flow.trigger_config, flow.status) == ("Greeting", "subscribed",
                                                                          {"keyword": "join"}, "off")
    assert service.describe(Session, flow)[0]["body"] == "Hi {first_name}"
    assert service.describe(Session, flow)[1] == {"kind": "wait", "until": "10:00"}
    condition = service.describe(Session, flow)[2]
    assert condition["no"][0]["body"] == "Need help choosing?"
    assert condition["yes"][0]["definition"]["rules"][0] == {"field": "segment", "op": "in", "value": vip.id}
    assert condition["yes"][0]["yes"][0]["body"] == "Thanks, VIP"


BAD = [
    (dict(name=""), "name", "Give the flow a name"),
    (dict(trigger="nope"), "trigger", "Choose what starts the flow"),
    (dict(trigger="segment_enter"), "segment_id", "Choose the segment"),
    (dict(segment_id="999999"), "segment_id", "does not exist"),
    (dict(cooldown_amount="-1"), "cooldown", "cool-down"),
    (dict(cooldown_amount="1000"), "cooldown", "cool-down"),
    (dict(cooldown_unit="weeks"), "cooldown", "cool-down"),
    (dict(exits=["order", "moon"]), "exits", "exits offered"),
    (dict(exits=["left_segment"]), "exits", "needs a segment"),
    (dict(runs="maybe"), "runs", "already in the flow"),
    (dict(trigger="subscribed", keyword="two words"), "keyword", "one word"),
]


@pytest.mark.parametrize("settings, _field, error", BAD)
def test_bad_settings_are_refused_beside_their_field_and_nothing_is_saved(client, auth, shop, db, settings,
                                                                          _field, error):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form_of(RESCUE, **settings))
    assert response.status_code == 200 and toast(response)["isError"]
    assert error in response.get_data(as_text=True)
    assert counts() == before and fresh(flow.id).version == 1 and fresh(flow.id).name == "Rescue"


@pytest.mark.parametrize("step, error", [
    ({"kind": "wait", "seconds": 0}, "more than none"),
    ({"kind": "wait", "seconds": 400 * 86400}, "at most a year"),
    ({"kind": "wait", "until": "25:00"}, "like 10:00"),
    ({"kind": "send", "body": ""}, "Write the text"),
    ({"kind": "send", "body": "x" * 1601}, "1,600"),
    ({"kind": "send", "body": "Hi {frist_name}"}, "Unknown merge tag {frist_name}"),
    ({"kind": "send", "body": "Your order {order_name}"}, "has no value for this flow"),
    ({"kind": "send", "body": "10% off", "discount_mode": "shared", "discount_code": "SAVE",
      "discount_kind": "percent", "discount_value": "10"}, "Put {discount_code} in the text"),
    ({"kind": "send", "body": "{discount_code}", "discount_mode": "unique", "discount_code": "A B",
      "discount_kind": "percent", "discount_value": "10"}, "A prefix is 1–20 letters or digits"),
    ({"kind": "send", "body": "{discount_code}", "discount_mode": "shared", "discount_code": "SAVE",
      "discount_kind": "percent", "discount_value": "150"}, "at most 100"),
    ({"kind": "send", "body": "{discount_code}", "discount_mode": "bogus"}, "Choose no discount"),
    ({"kind": "condition", "definition": {"match": "all", "rules": [
        {"field": "segment", "op": "in", "value": 999999}]}, "yes": [], "no": []}, "Choose one of your segments"),
    ({"kind": "condition", "definition": {"match": "all", "rules": [
        {"field": "number_of_orders", "op": "eq", "value": 0}]}, "yes": [], "no": []}, None),
])
def test_a_bad_step_is_refused_beside_the_step_and_nothing_is_saved(client, auth, shop, db, step, error):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    form = form_of([RESCUE[0], step, RESCUE[1]])
    if error is None:  # a fine condition, but its number of orders tampered into words
        form["s1-orders_value"] = ["none"]
        error = "whole number"
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and toast(response)["isError"]
    assert error in html and 'flow-step--error" data-step="1"' in html
    assert counts() == before and fresh(flow.id).version == 1


def test_a_flow_without_a_message_or_without_steps_is_refused(client, auth, shop, db):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    for steps, error in (([{"kind": "wait", "seconds": 60}], "at least one message"), ([], "at least one step")):
        response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form_of(steps))
        assert toast(response)["isError"] and error in response.get_data(as_text=True)
    assert counts() == before


def test_a_condition_the_segment_rules_refuse_is_a_clear_error(client, auth, shop, db):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    form = form_of([RESCUE[0], {"kind": "condition", "definition": {"match": "all", "rules": [
        {"field": "no_such_field", "op": "eq", "value": 1}]}}, RESCUE[1]])
    assert form["s1-test"] == ["rules"] and form["item"][0] == "group:c1:"
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form)
    html = response.get_data(as_text=True)  # checked as the segment builder checks: the problem beside its row
    assert toast(response)["isError"] and "Fix the highlighted rules of this condition." in html
    assert counts() == before


@pytest.mark.parametrize("tamper", [
    {"s0-kind": ["rocket"]},
    {"s5-kind": ["end"]},  # a gap in the numbering
    {"s0-yes-0-kind": ["end"]},  # a branch under a wait
    {"op": ["teleport-0"]},
    {"op": ["remove-7"]},
    {"op": ["add-0-yes-send"]},  # step 0 is no condition
])
def test_a_tampered_form_is_a_400_and_saves_nothing(client, auth, shop, db, tamper):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    url = f"/flows/{flow.id}/draft" if "op" in tamper else f"/flows/{flow.id}"
    response = client.post(url, headers={**auth, **HX}, data={**form_of(RESCUE), **tamper})
    assert response.status_code == 400
    assert counts() == before and fresh(flow.id).version == 1


def test_the_live_preview_shows_encoding_parts_and_cost_from_the_price_table(client, auth, shop):
    price = composer.price_per_segment(shop)
    short = client.post("/flows/preview/0", headers={**auth, **HX},
                        data={"s0-body": "Hi {first_name}, finish here: {checkout_url}"}).get_data(as_text=True)
    assert 'id="preview-0"' in short and "GSM-7" in short and ">1 part<" in short
    assert "https://example.myshopify.com/checkouts/c1/recover" in short  # the sample recovery link
    assert f"{price:.4f}" in short
    long = client.post("/flows/preview/2-yes-0", headers={**auth, **HX},
                       data={"s2-yes-0-body": "🎉 " + "a" * 80}).get_data(as_text=True)
    assert 'id="preview-2-yes-0"' in long and "Unicode" in long and ">2 parts<" in long
    assert f"{price * 2:.4f}" in long
    assert client.post("/flows/preview/zzz", headers={**auth, **HX}, data={}).status_code == 404


def test_another_shops_flow_is_a_404_and_the_token_is_required(client, auth, shop, other_shop, db):
    theirs = service.create(db, other_shop, name="Theirs", trigger="checkout_started", steps=RESCUE)
    for method, url in (("get", f"/flows/{theirs.id}/edit"), ("post", f"/flows/{theirs.id}"),
                        ("post", f"/flows/{theirs.id}/draft")):
        response = getattr(client, method)(url, headers={**auth, **HX}, data=form_of(RESCUE, runs="move"))
        assert response.status_code == 404, url
    for method, url in (("get", "/flows/new"), ("post", "/flows/"), ("post", f"/flows/{theirs.id}"),
                        ("post", "/flows/preview/0"), ("post", "/flows/draft")):
        assert getattr(client, method)(url).status_code in (401, 302, 303), url
    assert fresh(theirs.id).version == 1 and fresh(theirs.id).name == "Theirs"


def test_two_saves_at_once_write_two_whole_versions_one_after_the_other(app, db, shop):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    make_session = sessionmaker(bind=db.get_bind(), expire_on_commit=False)
    start, errors = threading.Barrier(2), []
    settings = dict(name="Rescue", trigger="checkout_started", exit_conditions=["order"])

    def editor(body: str, count: int):
        session = make_session()
        try:
            mine = session.get(Flow, flow.id)
            start.wait()
            service.save(session, session.get(type(shop), shop.id), mine, settings=settings, move_runs=True,
                         steps=[{"kind": "send", "body": body}] + [{"kind": "wait", "seconds": 60}] * count)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            session.close()

    threads = [threading.Thread(target=editor, args=(f"Text {n}", n)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    db.expire_all()
    assert db.get(Flow, flow.id).version == 3
    by_version = dict(db.execute(select(FlowStep.version, func.count()).where(FlowStep.flow_id == flow.id)
                                 .group_by(FlowStep.version)).tuples().all())
    assert by_version[1] == 2 and sorted([by_version[2], by_version[3]]) == [2, 3]  # each version whole


@pytest.mark.parametrize("runs, text", [("keep", "Forgot something? {checkout_url}"),
                                        ("move", "New words {checkout_url}")])
def test_a_waiting_run_goes_on_with_its_own_steps_or_the_new_ones_as_chosen(client, auth, shop, db, runs, text):
    shop.quiet_hours_enabled = False
    db.commit()
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    service.set_status(db, flow, True)
    _, old_send = db.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id).order_by(FlowStep.id)).all()
    person, now = factories.subscriber(db, shop), utcnow()
    db.add(FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=person.id, version=1, state=RunState.ACTIVE,
                   current_step_id=old_send.id, due_at=now, trigger_key="t", started_at=now))
    db.commit()
    edited = [{"kind": "wait", "seconds": 60}, {"kind": "send", "body": "New words {checkout_url}"}]
    assert not toast(client.post(f"/flows/{flow.id}", headers={**auth, **HX},
                                 data=form_of(edited, runs=runs)))["isError"]
    bind_shop(None)
    engine.advance(db, shop.id, now=now)
    db.expire_all()
    [message] = db.scalars(select(Message)).all()
    assert (message.subscriber_id, db.get(Campaign, message.campaign_id).body) == (person.id, text)
    assert db.scalar(select(FlowRun.state)) == RunState.COMPLETED


@pytest.mark.parametrize("where", ["trigger", "condition"])
def test_another_shops_segment_is_refused(client, auth, shop, other_shop, db, where):
    theirs = factories.segment(db, other_shop, factories.where(factories.rule("number_of_orders", "gt", 0)))
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    if where == "trigger":
        form = form_of(RESCUE, trigger="segment_enter", segment_id=str(theirs.id))
    else:
        form = form_of([RESCUE[0], {"kind": "condition", "definition": factories.where(
            factories.rule("segment", "in", theirs.id)), "yes": [], "no": []}, RESCUE[1]])
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form)
    assert toast(response)["isError"] and counts() == before


# ---------------------------------------------------------------------------------------------- conditions with rules

TWO_RULES = {"match": "any", "rules": [{"field": "money_spent", "op": "gt", "value": 50},
                                       {"field": "country", "op": "in", "value": ["US", "CA"]}]}


def _multidict(form: dict[str, list[str]]):
    from werkzeug.datastructures import MultiDict
    return MultiDict([(key, value) for key, values in form.items() for value in values])


def test_a_condition_of_any_rules_shows_the_segment_builder_and_saves_them_as_they_were(client, auth, shop, db):
    steps = [{"kind": "send", "body": "Hi"},
             {"kind": "condition", "definition": TWO_RULES, "yes": [{"kind": "send", "body": "Big spender"}],
              "no": [{"kind": "condition", "definition": {"match": "all", "rules": [
                  {"field": "number_of_orders", "op": "gt", "value": 2}, {"field": "country", "op": "in",
                                                                           "value": ["GB"]}]},
                      "yes": [{"kind": "send", "body": "Loyal Brit"}], "no": []}]}]
    flow = service.create(db, shop, name="Spenders", trigger="subscribed", steps=steps)
    html = client.get(f"/flows/{flow.id}/edit", headers={**auth, **HX}).get_data(as_text=True)
    # Each condition has its own builder: the segment builder's rows, its root keyed by the step's path.
    assert 'value="group:c1:"' in html and 'value="group:c1n0:"' in html
    assert html.count('class="rule-row"') == 4 and 'name="group-c1-match"' in html
    assert 'hx-get="/segments/builder/rule?parent=c1"' in html and "segment-builder.js" in html
    keys = re.findall(r'name="item" value="(?:rule|group):([a-z0-9]+):', html)
    assert len(keys) == len(set(keys)) == 6  # two roots, four rows: no key twice in the form
    # Saved as posted: the same definitions in the new version.
    form = _multidict(form_of(service.describe(db, flow), trigger="subscribed", exits=[]))
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=form)
    assert not toast(response)["isError"], response.get_data(as_text=True)[:2000]
    saved = fresh(flow.id)
    assert saved.version == 2
    described = service.describe(Session, saved)
    assert described[1]["definition"]["match"] == "any"
    assert [r["field"] for r in described[1]["definition"]["rules"]] == ["money_spent", "country"]
    assert [r["field"] for r in described[1]["no"][0]["definition"]["rules"]] == ["number_of_orders", "country"]


def test_switching_a_condition_to_rules_starts_the_builder_from_the_quick_test(client, auth, shop, db):
    form = form_of([{"kind": "condition", "definition": {"match": "all", "rules": [
        {"field": "number_of_orders", "op": "gte", "value": 3}]}, "yes": [{"kind": "send", "body": "Hi"}], "no": []}])
    assert form["s0-test"] == ["orders"] and "item" not in form
    form["s0-test"], form["op"] = ["rules"], ["refresh"]
    html = client.post("/flows/draft", headers={**auth, **HX}, data=_multidict(form)).get_data(as_text=True)
    assert 'value="group:c0:"' in html and html.count('class="rule-row"') == 1
    row = html[html.index('class="rule-row"'):]
    assert re.search(r'<option value="number_of_orders" selected', row)
    assert re.search(r'<option value="gte" selected', row) and 'value="3"' in row
    assert counts() == (0, 0, 0)


def test_a_wrong_rule_in_a_condition_is_shown_beside_its_row_and_saves_nothing(client, auth, shop, db):
    flow = service.create(db, shop, name="Rescue", trigger="checkout_started", steps=RESCUE)
    before = counts()
    form = form_of([RESCUE[0], {"kind": "condition", "definition": TWO_RULES, "yes": [], "no": []}, RESCUE[1]])
    [money_key] = [item.split(":")[1] for item in form["item"] if item.startswith("rule:")][:1]
    form[f"rule-{money_key}-value"] = ["lots"]
    response = client.post(f"/flows/{flow.id}", headers={**auth, **HX}, data=_multidict(form))
    html = response.get_data(as_text=True)
    assert toast(response)["isError"] and "Fix the highlighted rules of this condition." in html
    row = html[html.index(f'id="node-{money_key}"'):]
    assert 'field__error' in row[:row.index('id="node-', 10)]
    assert counts() == before


def test_rules_of_no_condition_are_a_400(client, auth, shop, db):
    form = form_of(RESCUE)
    form["item"] = ["group:c7:", "rule:zz1:c7"]
    form["rule-zz1-field"] = ["country"]
    response = client.post("/flows/", headers={**auth, **HX}, data=_multidict(form))
    assert response.status_code == 400 and counts() == (0, 0, 0)
