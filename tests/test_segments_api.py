"""The JSON API /api/segments: status codes and bodies, the contract's error format, tenant isolation."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.factories import add, rule, where
from tests.test_segments_web import EXAMPLE, person, segment, total
from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign, CampaignSegment, Product, Segment, StaticList, Subscriber
from kinnekt.segments import rules

pytestmark = pytest.mark.usefixtures("finished_jobs")


@pytest.fixture
def api(shop, token_for):
    """Headers of an API call with a valid session token for `shop`."""
    return {"Authorization": f"Bearer {token_for(shop.domain)}"}


@pytest.fixture
def shoppers(shop, other_shop):
    return [person(shop, "+12125550101", name="Ada", spent="120", orders=3, last_order_days=3),
            person(shop, "+12125550102", name="Bob", spent="20", orders=1, last_order_days=10),
            person(shop, "+12125550103", spent="80", orders=2, last_order_days=60),
            person(other_shop, "+12125550199", name="Mallory", spent="900", orders=9, last_order_days=1)]


def test_list_shows_only_the_shops_segments(client, api, shop, other_shop):
    segment(shop, EXAMPLE, "Recent spenders", member_count=3, build_status="done",
            last_built_at=dt.datetime(2026, 3, 5, 2, 5, tzinfo=dt.timezone.utc))
    segment(shop, where(rule("subscription_source", "eq", "all")), "All subscribers", kind="auto", auto_source="all")
    segment(other_shop, EXAMPLE, "Theirs")
    response = client.get("/api/segments", headers=api)
    assert response.status_code == 200
    body = response.get_json()
    assert [s["name"] for s in body["segments"]] == ["All subscribers", "Recent spenders"]
    recent = body["segments"][1]
    assert recent["definition"] == EXAMPLE and recent["kind"] == "manual" and recent["editable"] is True
    assert recent["member_count"] == 3 and recent["last_built_at"] == "2026-03-05T02:05:00Z"
    assert body["segments"][0]["editable"] is False


def test_create_returns_201_with_the_normalised_segment(client, api, app, shop, shoppers):
    response = client.post("/api/segments", json={"name": "Recent spenders", "definition": {
        "match": "all", "rules": [{"field": "last_order_created", "op": "eq", "value": "last_30_days"},
                                  {"field": "money_spent", "op": "gt", "value": "25.00"}]}}, headers=api)
    assert response.status_code == 201
    body = response.get_json()
    assert body["name"] == "Recent spenders" and body["definition"] == rules.normalise(EXAMPLE)
    assert body["has_relative_time"] is True  # build_status: the background build may have started already
    app.extensions["kinnekt_queue"].drain()
    shown = client.get(f"/api/segments/{body['id']}", headers=api).get_json()
    assert shown["member_count"] == 1 and shown["build_status"] == "done"


def test_an_invalid_definition_is_422_with_every_path(client, api, shop):
    response = client.post("/api/segments", json={"name": "", "definition": {
        "match": "some", "rules": [{"field": "money_spent", "op": "gt", "value": "cheap"},
                                   {"field": "nope", "op": "eq", "value": 1}]}}, headers=api)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert {e["path"] for e in errors} == {"name", "match", "rules[0].value", "rules[1].field"}
    assert all(set(e) == {"path", "message"} and e["message"] for e in errors)
    assert total(Segment) == 0


def test_bad_lifecycle_and_discount_rules_are_422_naming_the_path(client, api, shop):
    response = client.post("/api/segments", json={"name": "Bad stages", "definition": {"match": "all", "rules": [
        {"field": "lifecycle_stage", "op": "eq", "value": "vip"},
        {"field": "previous_lifecycle_stage", "op": "in", "value": ["loyal", 3]},
        {"field": "lifecycle_stage", "op": "gte", "value": "loyal"},
        {"field": "expected_next_order", "op": "within_last_days", "value": "soon"},
        {"field": "event", "event": "used_coupon", "op": "performed"},
        {"field": "event", "event": "received_discount", "op": "performed", "within": {"last_days": 0}}]}},
        headers=api)
    assert response.status_code == 422
    stages = "must be one of loyal, high_potential, nurture_needed, dormant, churned"
    assert response.get_json()["errors"] == [
        {"path": "rules[0].value", "message": stages},
        {"path": "rules[1].value[1]", "message": stages},
        {"path": "rules[2].op",
         "message": "'gte' is not an operator of lifecycle_stage (allowed: eq, neq, in, not_in)"},
        {"path": "rules[3].value", "message": "must be a number"},
        {"path": "rules[4].event", "message": "must be one of placed_order, received_sms, clicked_link, "
                                              "started_checkout, subscribed, received_discount, used_discount, "
                                              "visited, viewed_product, viewed_collection, added_to_cart"},
        {"path": "rules[5].within.last_days", "message": "must be a whole number of at least 1"}]
    assert total(Segment) == 0
    good = {"match": "all", "rules": [{"field": "lifecycle_stage", "op": "in", "value": ["loyal", "dormant"]},
                                      {"field": "event", "event": "used_discount", "op": "not_performed"}]}
    response = client.post("/api/segments", json={"name": "Good stages", "definition": good}, headers=api)
    assert response.status_code == 201
    assert response.get_json()["definition"]["rules"][1] == {
        "field": "event", "event": "used_discount", "op": "not_performed", "within": "all_time", "at_least": 1}


def test_name_and_definition_are_required(client, api, shop):
    response = client.post("/api/segments", json={}, headers=api)
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{"path": "name", "message": "is required"},
                                             {"path": "", "message": "definition is required"}]


def test_a_taken_name_is_422(client, api, shop):
    segment(shop, EXAMPLE, "Taken")
    response = client.post("/api/segments", json={"name": "Taken", "definition": EXAMPLE}, headers=api)
    assert response.status_code == 422
    [error] = response.get_json()["errors"]
    assert error["path"] == "name" and "already exists" in error["message"]
    assert total(Segment) == 1


def test_other_shops_products_segments_and_lists_are_rejected(client, api, shop, other_shop):
    add(Product(shop_id=other_shop.id, shopify_id=22, title="Theirs"), Product(shop_id=shop.id, shopify_id=11,
                                                                               title="Ours"))
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    their_list = add(StaticList(shop_id=other_shop.id, name="Their list"))
    definition = where(rule("ordered_product", "eq", [11, 22]), rule("segment", "in", theirs.id),
                       rule("list", "in", their_list.id),
                       rule("line_items", "eq", "22", attribute="product_id"))
    response = client.post("/api/segments", json={"name": "Sneaky", "definition": definition}, headers=api)
    assert response.status_code == 422
    assert sorted((e["path"], e["message"]) for e in response.get_json()["errors"]) == [
        ("rules[0].value[1]", "there is no product 22 in this shop"),
        ("rules[1].value", f"there is no segment {theirs.id} in this shop"),
        ("rules[2].value", f"there is no list {their_list.id} in this shop"),
        ("rules[3].value", "there is no product 22 in this shop"),
    ]
    assert total(Segment) == 1  # only theirs


def test_another_shops_segment_is_not_found(client, api, other_shop):
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    assert client.get(f"/api/segments/{theirs.id}", headers=api).status_code == 404
    assert client.put(f"/api/segments/{theirs.id}", json={"name": "Mine now"}, headers=api).status_code == 404
    assert client.delete(f"/api/segments/{theirs.id}?confirm=true", headers=api).status_code == 404
    assert client.get(f"/api/segments/{theirs.id}/members.csv", headers=api).status_code == 404
    response = client.get("/api/segments/999999", headers=api)
    assert response.status_code == 404 and response.get_json()["error"] == "Not Found"
    Session.expire_all()
    assert Session.get(Segment, theirs.id).name == "Theirs"


def test_update_renames_and_redefines(client, api, shop):
    mine = segment(shop, where(rule("money_spent", "gt", 1000)), "Whales")
    response = client.put(f"/api/segments/{mine.id}", json={"name": "Big whales"}, headers=api)
    assert response.status_code == 200
    assert response.get_json()["name"] == "Big whales"
    assert response.get_json()["definition"] == rules.normalise(where(rule("money_spent", "gt", 1000)))
    response = client.put(f"/api/segments/{mine.id}", json={"definition": EXAMPLE}, headers=api)
    assert response.status_code == 200 and response.get_json()["definition"] == rules.normalise(EXAMPLE)
    assert response.get_json()["name"] == "Big whales"
    response = client.put(f"/api/segments/{mine.id}", json={"definition": where(rule("segment", "in", mine.id))},
                          headers=api)
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{"path": "rules[0].value",
                                              "message": "a segment cannot refer to itself"}]


def test_auto_segments_cannot_be_updated(client, api, shop):
    auto = segment(shop, where(rule("subscription_source", "eq", "all")), "All subscribers", kind="auto",
                   auto_source="all")
    response = client.put(f"/api/segments/{auto.id}", json={"name": "Renamed"}, headers=api)
    assert response.status_code == 409 and "cannot be edited" in response.get_json()["message"]


def test_delete_in_use_needs_confirmation(client, api, shop, shoppers):
    used = segment(shop, EXAMPLE, "Used")
    campaign = add(Campaign(shop_id=shop.id, name="Spring sale", status="scheduled",
                            send_at=utcnow() + dt.timedelta(days=1)))
    add(CampaignSegment(shop_id=shop.id, campaign_id=campaign.id, segment_id=used.id))
    response = client.delete(f"/api/segments/{used.id}", headers=api)
    assert response.status_code == 409
    assert response.get_json()["usages"] == [{"kind": "campaign", "id": campaign.id, "name": "Spring sale",
                                              "status": "Scheduled"}]
    Session.expire_all()
    assert Session.get(Segment, used.id) is not None
    assert client.delete(f"/api/segments/{used.id}?confirm=true", headers=api).status_code == 204
    Session.expire_all()
    assert Session.get(Segment, used.id) is None and total(Subscriber) == len(shoppers)


def test_delete_unused_needs_no_confirmation(client, api, shop):
    unused = segment(shop, EXAMPLE, "Unused")
    response = client.delete(f"/api/segments/{unused.id}", headers=api)
    assert response.status_code == 204 and response.get_data() == b""
    Session.expire_all()
    assert Session.get(Segment, unused.id) is None


def test_preview_counts_and_samples(client, api, shop, shoppers):
    response = client.post("/api/segments/preview", json={"definition": EXAMPLE}, headers=api)
    assert response.status_code == 200
    assert response.get_json() == {"count": 1, "sample": [{"id": shoppers[0].id, "phone": "+12125550101",
                                                           "name": "Ada"}]}
    response = client.post("/api/segments/preview", json={"definition": where(rule("money_spent", "gte", 0))},
                           headers=api)
    assert response.get_json()["count"] == 3
    response = client.post("/api/segments/preview", json={"definition": where(rule("money_spent", "gt", []))},
                           headers=api)
    assert response.status_code == 422
    assert response.get_json() == {"errors": [{"path": "rules[0].value",
                                               "message": "must be a number or a decimal string"}]}
    assert total(Segment) == 0


@pytest.mark.parametrize("body,content_type,message", [
    ("{not json", "application/json", "The request body is not valid JSON."),
    ("[1, 2]", "application/json", "The request body must be a JSON object."),
    ("name=x", "application/x-www-form-urlencoded", "Send a JSON object with Content-Type: application/json."),
])
def test_a_bad_body_is_400_with_a_clear_message(client, api, shop, body, content_type, message):
    for method, url in (("post", "/api/segments"), ("post", "/api/segments/preview")):
        response = getattr(client, method)(url, data=body, headers={**api, "Content-Type": content_type})
        assert response.status_code == 400
        assert response.get_json() == {"error": "Bad Request", "message": message}
    mine = segment(shop, EXAMPLE, "Mine")
    response = client.put(f"/api/segments/{mine.id}", data=body, headers={**api, "Content-Type": content_type})
    assert response.status_code == 400 and response.get_json()["message"] == message


def test_absurdly_deep_json_is_400(client, api, shop):
    depth = 5000
    body = ('{"definition": ' + '{"match": "all", "rules": [' * depth
            + '{"field": "money_spent", "op": "gt", "value": 1}' + ']}' * depth + '}')
    response = client.post("/api/segments/preview", data=body, headers={**api, "Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["message"] == "The request body is nested too deeply."
    # 30 groups (61 levels of JSON) are parsed and refused by the contract; past 64 levels, unparsed (above)
    body = '{"definition": ' + '{"match": "all", "rules": [' * 30 + '{"field": "money_spent", "op": "gt", "value": 1}' \
        + ']}' * 30 + '}'
    response = client.post("/api/segments/preview", data=body, headers={**api, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["message"] == "groups nest at most 4 deep (the root is depth 1)"


def test_members_csv_is_streamed(client, api, shop, shoppers):
    mine = segment(shop, where(rule("money_spent", "gt", 25)), "Spenders")
    response = client.get(f"/api/segments/{mine.id}/members.csv", headers=api)
    assert response.status_code == 200 and response.is_streamed and response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0].startswith("phone,") and sorted(line.split(",")[0] for line in lines[1:]) == [
        "+12125550101", "+12125550103"]


def test_the_api_needs_a_session_token(client, app, shop):
    from kinnekt.shopify import session_token
    assert client.get("/api/segments").status_code == 401
    forged = session_token.mint(shop.domain, app.config["SHOPIFY_API_KEY"], "not-the-app-secret-0123456789abcdef")
    response = client.post("/api/segments", json={"name": "x", "definition": EXAMPLE},
                           headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and response.get_json() == {"error": "invalid session token"}
    assert total(Segment) == 0


def test_property_rules_through_the_api(client, api, shop):
    from kinnekt.subscribers import properties
    properties.add(Session, shop.id, "Shoe size", "number")
    ada = add(Subscriber(shop_id=shop.id, phone="+12125550101", status="subscribed", source="manual"))
    bob = add(Subscriber(shop_id=shop.id, phone="+12125550102", status="subscribed", source="manual"))
    properties.set_values(Session, ada, {"shoe size": "10.5", "language": "Deutsch"})
    properties.set_values(Session, bob, {"shoe size": "9"})
    Session.commit()
    definition = where(rule("property", "gt", 10, attribute="Shoe Size"),
                       rule("property", "eq", "DEUTSCH", attribute="language"))
    preview = client.post("/api/segments/preview", json={"definition": definition}, headers=api)
    assert preview.status_code == 200 and [m["id"] for m in preview.get_json()["sample"]] == [ada.id]
    created = client.post("/api/segments", json={"name": "Big feet", "definition": definition}, headers=api)
    assert created.status_code == 201
    assert created.get_json()["definition"]["rules"] == [
        {"field": "property", "attribute": "shoe size", "op": "gt", "value": "10"},
        {"field": "property", "attribute": "language", "op": "eq", "value": "deutsch"}]
    refused = client.post("/api/segments/preview", headers=api, json={"definition": where(
        rule("property", "gt", "big", attribute="shoe size"), rule("property", "eq", "x", attribute="hat size"),
        rule("property", "anniversary_today", attribute="shoe size"))})
    assert refused.status_code == 422
    assert refused.get_json()["errors"] == [
        {"path": "rules[0].value", "message": "must be a number or a decimal string"},
        {"path": "rules[1].attribute",
         "message": "there is no property 'hat size' in this shop (it has: birthday, language, shoe size)"},
        {"path": "rules[2].op", "message": "'anniversary_today' is not an operator of the number property "
                                           "'shoe size' (allowed: eq, neq, lt, lte, gt, gte, between, is_set, "
                                           "is_not_set)"}]
