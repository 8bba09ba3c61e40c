"""The htmx helpers: which requests count as htmx ones, merged HX-Trigger events, redirects, Vary."""
import json

import pytest
from flask import Flask, make_response

from kinnekt.web import hx


@pytest.fixture(scope="module")
def bare_app():
    return Flask(__name__)


@pytest.mark.parametrize("headers, expected", [
    ({"HX-Request": "true"}, True),
    ({"HX-Request": "TRUE"}, True),
    ({}, False),
    ({"HX-Request": "false"}, False),
    ({"HX-Request": "1"}, False),
    ({"HX-Request": "true", "HX-Boosted": "true"}, False),  # a boosted link is a full navigation
    ({"HX-Request": "true", "HX-Boosted": "false"}, True),
    ({"HX-Boosted": "true"}, False),
])
def test_is_htmx(bare_app, headers, expected):
    with bare_app.test_request_context("/", headers=headers):
        assert hx.is_htmx() is expected


def test_trigger_merges_events_from_several_layers(bare_app):
    with bare_app.test_request_context("/"):
        response = hx.toast(hx.trigger(make_response("x"), "segmentSaved", {"id": 7}), "Saved")
        assert json.loads(response.headers["HX-Trigger"]) == {
            "segmentSaved": {"id": 7}, "toast": {"message": "Saved", "isError": False}}


def test_trigger_keeps_a_plain_event_list_set_before(bare_app):
    with bare_app.test_request_context("/"):
        response = make_response("x")
        response.headers["HX-Trigger"] = "refresh, closeDialog"
        events = json.loads(hx.trigger(response, "toast", {"message": "Done"}).headers["HX-Trigger"])
        assert events == {"refresh": None, "closeDialog": None, "toast": {"message": "Done"}}


def test_redirect_is_hx_location_for_htmx_and_303_otherwise(bare_app):
    with bare_app.test_request_context("/", headers={"HX-Request": "true"}):
        response = hx.redirect_to("/segments/")
        assert response.status_code == 200
        assert json.loads(response.headers["HX-Location"]) == {"path": "/segments/", "target": "#main"}
    with bare_app.test_request_context("/"):
        response = hx.redirect_to("/segments/")
        assert response.status_code == 303 and response.headers["Location"] == "/segments/"


def test_stop_polling_and_vary(bare_app):
    with bare_app.test_request_context("/"):
        assert hx.stop_polling("done").status_code == 286
        assert "HX-Request" in hx.add_vary(make_response("x")).headers["Vary"]
