"""Response headers (kinnekt.web.headers): no-store on anything with personal data, the CSP, HSTS over https."""
from __future__ import annotations

import pytest

from kinnekt.db import Session, utcnow
from kinnekt.models import Segment, Subscriber
from kinnekt.segments.auto import source_definition


@pytest.fixture
def people(db, shop):
    """A subscriber and a segment holding it, so pages, CSV and JSON carry a phone number."""
    subscriber = Subscriber(shop_id=shop.id, phone="+16502530000", status="subscribed", source="manual",
                            first_name="Ada", subscribed_at=utcnow())
    segment = Segment(shop_id=shop.id, name="Everyone", kind="manual", definition=source_definition("manual"))
    Session.add_all([subscriber, segment])
    Session.commit()
    return subscriber, segment


def test_everything_that_can_hold_personal_data_is_no_store(client, auth, shop, people):
    subscriber, segment = people
    bearer = {"Authorization": auth["Authorization"]}
    answers = [
        ("page", "/subscribers/", bearer), ("partial", "/subscribers/", auth),
        ("detail", f"/subscribers/{subscriber.id}", bearer), ("csv", f"/segments/{segment.id}/members.csv", bearer),
        ("api json", "/api/segments", bearer), ("api csv", f"/api/segments/{segment.id}/members.csv", bearer),
        ("not found", "/subscribers/999999", bearer),
    ]
    for name, url, headers in answers:
        response = client.get(url, headers=headers)
        body = response.get_data(as_text=True)
        assert response.headers.get("Cache-Control") == "no-store", (name, response.status_code)
        if name in ("page", "csv", "api csv"):
            assert "+16502530000" in body or "(650) 253-0000" in body, name


def test_assets_keep_their_own_caching(client):
    assert client.get("/static/css/app.css").headers["Cache-Control"] != "no-store"
    assert client.get("/proxy/popup.js").headers["Cache-Control"] == "public, max-age=300"


def test_scripts_may_come_only_from_the_app_and_shopifys_cdn(client, auth, shop):
    for response in (client.get("/segments/", headers=auth), client.get("/auth/session-token-bounce"),
                     client.get("/j/nobody")):
        csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";") if part.strip()]
        assert "script-src 'self' https://cdn.shopify.com" in csp
        assert "object-src 'none'" in csp and "base-uri 'self'" in csp
        assert any(part.startswith("frame-ancestors ") for part in csp)


def test_hsts_over_https_only(app, client, monkeypatch):
    assert client.get("/healthz", base_url="https://kinnekt.test").headers["Strict-Transport-Security"] == \
        "max-age=31536000"
    monkeypatch.setitem(app.config, "SHOPIFY_APP_URL", "http://127.0.0.1:5000")  # the demo
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    assert "Strict-Transport-Security" in client.get("/healthz", base_url="https://127.0.0.1").headers
    # Behind a TLS-terminating proxy the app sees http; its public https URL says how browsers reach it.
    monkeypatch.setitem(app.config, "SHOPIFY_APP_URL", "https://kinnekt.example.com")
    assert "Strict-Transport-Security" in client.get("/healthz").headers
