"""Input no view can use is refused at the edge: route ids past a BIGINT are 404 on every route, NUL characters
in the path, query or form are 400, JSON nested 100,000 deep is 400 on the public endpoints (no traceback),
lone surrogates in the JSON API are 422; nothing is saved, on SQLite and PostgreSQL alike."""
from __future__ import annotations

import io
import json
import logging

import pytest
from sqlalchemy import func, select
from werkzeug.exceptions import NotFound

from kinnekt import defaults
from kinnekt.models import InboundMessage, Segment, Subscriber, SubscriberImport, WebhookEvent
from kinnekt.tenancy import bind_shop, get_or_404
from kinnekt.web import guards
from tests import shopify_payloads as sp
from tests.fake_vonage import inbound_body

pytestmark = pytest.mark.usefixtures("finished_jobs")

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
DEFINITION = {"match": "all", "rules": [{"field": "subscription_source", "op": "eq", "value": "all"}]}


def count(db, model) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model).execution_options(all_shops=True))


def id_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route that takes an id, with 2^63 (one past the largest BIGINT) for each id."""
    out = []
    for rule in app.url_map.iter_rules():
        if "<int:" not in rule.rule:
            continue
        values = {name: 2**63 if name.endswith("_id") else "meta" for name in rule.arguments}
        path = rule.rule
        for name, value in values.items():
            path = path.replace(f"<int:{name}>", str(value)).replace(f"<{name}>", str(value))
        out += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


# ---------------------------------------------------------------------------------------------- ids

def test_every_route_with_an_id_answers_404_past_the_largest_bigint(app, client, auth, shop):
    routes = id_routes(app)
    assert len(routes) >= 38  # every route that takes an id (38 when this was written)
    answers = {(method, path): client.open(path, method=method, headers=auth).status_code for method, path in routes}
    assert {key: status for key, status in answers.items() if status != 404} == {}


def test_ids_not_in_ascii_digits_or_past_the_largest_bigint_match_no_route(app):
    adapter = app.url_map.bind("localhost")
    for value in (str(2**63), str(2**64), "9" * 5000, "١", "²", "-1"):
        with pytest.raises(NotFound):
            adapter.match(f"/campaigns/{value}")


def test_the_largest_bigint_is_still_an_id(app):
    endpoint, args = app.url_map.bind("localhost").match(f"/campaigns/{2**63 - 1}")
    assert (endpoint, args) == ("campaigns.detail", {"campaign_id": 2**63 - 1})


def test_an_id_read_from_a_form_is_a_404_past_the_largest_bigint_too(db, shop):
    bind_shop(shop.id)
    for value in (2**63, str(2**63), "9" * 5000, "²", "١"):
        with pytest.raises(NotFound):
            get_or_404(Segment, value)


# ---------------------------------------------------------------------------------------------- NUL characters

def test_a_nul_in_a_form_field_is_400_with_a_message_and_saves_nothing(client, auth, db, shop):
    response = client.post("/subscribers/new", headers=auth,
                           data={"phone": "+12125550101", "first_name": "Ada\x00", "consent": "on"})
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True) and "first_name" in response.get_data(as_text=True)
    assert count(db, Subscriber) == 0


def test_a_nul_in_an_uploaded_files_name_is_400_and_saves_nothing(client, auth, db, shop, monkeypatch):
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_INLINE_ROWS", 1)  # a job's import keeps the file's name
    content = b"phone\n+12125550101\n+12125550102\n"
    response = client.post("/subscribers/import", headers=auth, content_type="multipart/form-data",
                           data={"consent": "on", "file": (io.BytesIO(content), "people\x00.csv")})
    assert response.status_code == 400 and "NUL character" in response.get_data(as_text=True)
    assert count(db, SubscriberImport) == 0 and count(db, Subscriber) == 0


def test_a_nul_in_a_query_argument_is_400_with_a_message(client, auth, shop):
    response = client.get("/subscribers/", query_string={"q": "a\x00b"}, headers=auth)
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)


def test_a_nul_in_the_path_is_400(client):
    response = client.get("/r/abc%00def")
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)


def test_a_nul_in_an_inbound_text_is_400_and_nothing_is_stored(client, db, shop):
    shop.sender = "15550100200"
    db.commit()
    body = inbound_body("JOIN\x00", from_="447400123456", to="15550100200")
    assert client.post("/sms/inbound", json=body).status_code == 400
    assert count(db, InboundMessage) == 0


def test_json_api_answers_400_for_a_nul_and_saves_nothing(client, auth, db, shop):
    response = client.post("/api/segments", json={"name": "VIP\x00", "definition": DEFINITION}, headers=auth)
    assert response.status_code == 400
    assert "NUL character" in response.get_json()["message"]
    assert count(db, Segment) == 0


# ---------------------------------------------------------------------------------------------- deep JSON

def test_deep_json_to_vonage_endpoints_is_400_before_the_signature_check(app, client, db, shop, monkeypatch, caplog):
    monkeypatch.setitem(app.config, "VONAGE_SIGNATURE_SECRET", "sig-secret-0123456789")  # unsigned: else a 401
    for path in ("/sms/inbound", "/sms/receipt"):
        for body in (DEEP, DEEP_OBJECT):
            with caplog.at_level(logging.INFO):
                response = client.post(path, data=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, path
            assert "deeper than" in response.get_json()["message"]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert count(db, InboundMessage) == 0


def test_deep_json_to_every_shopify_webhook_is_400_and_stores_nothing(app, client, db, shop, caplog):
    for topic, path in sp.ENDPOINTS.items():
        for body in (DEEP, DEEP_OBJECT):
            signed = sp.headers(topic, body, secret=app.config["SHOPIFY_API_SECRET"], domain=shop.domain)
            unsigned = {k: v for k, v in signed.items() if k != "X-Shopify-Hmac-Sha256"}
            for headers in (signed, unsigned):
                with caplog.at_level(logging.INFO):
                    response = client.post(path, data=body, headers=headers)
                assert response.status_code == 400, topic
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert count(db, WebhookEvent) == 0


def test_deep_json_to_the_api_is_400(client, auth, shop):
    response = client.post("/api/segments", data=DEEP, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "The request body is nested too deeply."


def test_nesting_is_measured_outside_strings_and_stops_early():
    assert not guards.nested_too_deep(b'{"a": "' + b"[" * 100 + b'"}')
    assert not guards.nested_too_deep(b'["\\"[[[[", ' + b"[" * 63 + b"]" * 63 + b"]")
    assert guards.nested_too_deep(b"[" * 65)
    assert not guards.nested_too_deep(b"[" * 64 + b"]" * 64)
    assert guards.nested_too_deep(b"{" * 10_000_000)  # 10 MB, refused at its 65th brace


# ---------------------------------------------------------------------------------------------- lone surrogates

@pytest.mark.parametrize("document, path", [
    ({"name": "VIP \ud800", "definition": DEFINITION}, "name"),
    ({"name": "VIP", "definition": {"match": "all", "rules": [
        {"field": "subscription_source", "op": "eq", "value": "\udfffall"}]}}, "rules[0].value"),
    ({"name": "VIP", "definition": {"match": "all", "rules": [{"field\ud800": "x"}]}}, "rules[0].field\ufffd"),
])
def test_a_lone_surrogate_in_the_json_api_is_422_naming_where_and_saves_nothing(client, auth, db, shop, document,
                                                                               path):
    response = client.post("/api/segments", json=document, headers=auth)  # json.dumps writes \ud800 escapes
    assert response.status_code == 422
    assert response.get_json() == {"errors": [{"path": path,
                                               "message": "contains a lone surrogate (half of a UTF-16 pair)"}]}
    assert count(db, Segment) == 0


def test_a_lone_surrogate_in_a_preview_or_an_update_is_422(client, auth, db, shop):
    created = client.post("/api/segments", json={"name": "VIP", "definition": DEFINITION}, headers=auth)
    assert created.status_code == 201
    segment_id = created.get_json()["id"]
    assert client.put(f"/api/segments/{segment_id}", json={"name": "\ud800"}, headers=auth).status_code == 422
    assert client.post("/api/segments/preview", json={"definition": {"match": "\ud800", "rules": []}},
                       headers=auth).status_code == 422
    db.expire_all()
    assert db.get(Segment, segment_id).name == "VIP"


def test_a_lone_surrogate_in_a_vonage_json_body_is_400_and_nothing_is_stored(client, db, shop):
    shop.sender = "15550100200"
    db.commit()
    data = inbound_body("hi \ud800", from_="447400123456", to="15550100200")
    response = client.post("/sms/inbound", json=data)
    assert response.status_code == 400
    assert response.get_json()["message"] == "text contains a lone surrogate (half of a UTF-16 pair)"
    assert client.post("/sms/receipt", json={"message_uuid": "\udc00", "status": "delivered"}).status_code == 400
    assert count(db, InboundMessage) == 0


def test_surrogate_pairs_are_text():
    assert guards.unstorable_text(json.loads('{"a": ["\\ud83d\\ude00"]}')) is None
    found = guards.unstorable_text(json.loads('{"a": [1, {"b": "x\\ud83d"}]}'))
    assert (found.path, found.nul) == ("a[1].b", False)
