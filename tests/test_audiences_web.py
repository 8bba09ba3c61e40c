"""The ad audiences card and the OAuth round trip: Facebook Login against the fake Graph API, state tampering
refused, tokens encrypted at rest, account choice, segment links, cross-shop ids and bad input (never a 500,
nothing saved)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from kinnekt.audiences import connections
from kinnekt.models import AdConnection, AudienceLink
from kinnekt.tenancy import bind_shop
from tests import factories as f

BASE = "https://kinnekt.test"


def count(db, model) -> int:
    bind_shop(None)  # a request in this thread may have left the session bound to its shop
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model))


@pytest.fixture(autouse=True)
def fresh_rate_limit(monkeypatch):
    """Each test starts with no OAuth requests counted against its address."""
    from kinnekt.storefront.limits import LocalCounter
    from kinnekt.web import audience_oauth
    monkeypatch.setattr(audience_oauth, "_attempts", LocalCounter())


def start_login(client, shop_id: int, platform: str = "meta"):
    """Open the start link as the Settings card hands it out; the redirect to the dialog and its state."""
    with client.application.app_context():
        token = connections.start_token(shop_id, platform)
    response = client.get(f"/audiences/oauth/{platform}/start", query_string={"t": token}, base_url=BASE)
    assert response.status_code == 302, response.get_data(as_text=True)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return response, query["state"][0], query


def finish_login(client, fake_meta, state: str, *, code: str | None = None):
    code = code or fake_meta.issue_code(f"{BASE}/audiences/oauth/meta/callback")
    return client.get("/audiences/oauth/meta/callback", query_string={"code": code, "state": state}, base_url=BASE)


@pytest.fixture
def connected(db, shop, fake_meta, app):
    """The shop connected to Meta through the real login flow (two ad accounts, none chosen yet)."""
    client = app.test_client()
    _response, state, _query = start_login(client, shop.id)
    assert finish_login(client, fake_meta, state).status_code == 200
    return db.scalar(select(AdConnection).where(AdConnection.shop_id == shop.id))


def test_login_flow_saves_encrypted_tokens_and_lists_the_ad_accounts(db, shop, fake_meta, app):
    client = app.test_client()
    response, state, query = start_login(client, shop.id)
    assert response.headers["Location"].startswith(f"{fake_meta.url}/v25.0/dialog/oauth?")
    assert query["client_id"] == ["1234567890"] and query["scope"] == ["ads_management"]
    assert query["redirect_uri"] == [f"{BASE}/audiences/oauth/meta/callback"]
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    answer = finish_login(client, fake_meta, state)
    assert answer.status_code == 200 and "is connected" in answer.get_data(as_text=True)
    connection = db.scalar(select(AdConnection))
    token = connections.access_token(connection)
    assert token.startswith("EAAlong")  # the long-lived token, not the short one
    assert token not in connection.access_token_enc
    assert [a["id"] for a in connection.accounts] == ["111", "222"] and connection.account_id is None
    kinds = [c["kind"] for c in fake_meta.calls()]
    assert kinds == ["token", "token", "accounts"]
    assert fake_meta.calls("token")[1]["params"]["grant_type"] == "fb_exchange_token"
    # The state is single-use: the cookie is gone, so a replay is refused.
    assert finish_login(client, fake_meta, state).status_code == 403


def test_a_tampered_state_is_refused_and_saves_nothing(db, shop, fake_meta, app):
    client = app.test_client()
    _response, state, _query = start_login(client, shop.id)
    for forged in (state[:-2] + ("AA" if not state.endswith("AA") else "BB"), "", "x" * 5000, "é"):
        assert finish_login(client, fake_meta, forged).status_code == 403
    assert count(db, AdConnection) == 0


def test_a_state_from_another_browser_or_shop_is_refused(db, shop, other_shop, fake_meta, app):
    victim, attacker = app.test_client(), app.test_client()
    _r, attackers_state, _q = start_login(attacker, other_shop.id)
    start_login(victim, shop.id)
    # The attacker's state (their shop) in the victim's browser, whose cookie holds another nonce: refused.
    assert finish_login(victim, fake_meta, attackers_state).status_code == 403
    # No cookie at all (a link opened elsewhere): refused.
    assert finish_login(app.test_client(), fake_meta, attackers_state).status_code == 403
    assert count(db, AdConnection) == 0


def test_a_state_for_another_platform_and_a_bad_start_link_are_refused(db, shop, fake_meta, app):
    client = app.test_client()
    _r, state, _q = start_login(client, shop.id)
    refused = client.get("/audiences/oauth/google/callback", query_string={"code": "c", "state": state},
                         base_url=BASE)
    assert refused.status_code == 403
    for token in ("", "nonsense", connections.start_token.__name__):
        assert client.get("/audiences/oauth/meta/start", query_string={"t": token}, base_url=BASE).status_code == 400
    with app.app_context():
        google_token = connections.start_token(shop.id, "google")
    assert client.get("/audiences/oauth/meta/start", query_string={"t": google_token},
                      base_url=BASE).status_code == 400
    assert count(db, AdConnection) == 0


def test_a_cancelled_login_or_a_refused_code_saves_nothing(db, shop, fake_meta, app):
    client = app.test_client()
    _r, state, _q = start_login(client, shop.id)
    cancelled = client.get("/audiences/oauth/meta/callback", base_url=BASE,
                           query_string={"error": "access_denied", "error_reason": "user_denied", "state": state})
    assert cancelled.status_code == 400
    _r, state, _q = start_login(client, shop.id)
    assert finish_login(client, fake_meta, state, code="made-up").status_code == 400
    _r, state, _q = start_login(client, shop.id)
    assert client.get("/audiences/oauth/meta/callback", query_string={"state": state},
                      base_url=BASE).status_code == 400
    assert count(db, AdConnection) == 0


def test_the_card_shows_how_long_metas_login_lasts(db, shop, connected, client, auth):
    body = client.get("/settings/audiences/", headers=auth).get_data(as_text=True)
    assert "Meta&#39;s login lasts until" in body or "Meta's login lasts until" in body
    assert "Northwind Ads (111)" in body and "Connect again" in body


def test_the_card_offers_to_connect_when_configured(db, shop, fake_meta, client, auth):
    body = client.get("/settings/audiences/", headers=auth).get_data(as_text=True)
    assert 'id="connect-meta"' in body and "/audiences/oauth/meta/start?t=" in body
    assert "Not set up on this Kinnekt server" in body  # Google has no credentials here


def test_choosing_an_account_then_syncing_a_segment(db, shop, connected, client, auth, jobs):
    bad = client.post("/settings/audiences/meta/account", data={"account_id": "999"}, headers=auth)
    assert bad.status_code == 200 and "Choose one of the ad accounts" in bad.get_data(as_text=True)
    db.expire_all()
    assert db.get(AdConnection, connected.id).account_id is None
    ok = client.post("/settings/audiences/meta/account", data={"account_id": "222"}, headers=auth)
    assert ok.status_code == 200
    db.expire_all()
    assert db.get(AdConnection, connected.id).account_name == "Second"
    segment = f.segment(db, shop, f.where(f.rule("country", "in", ["US"])), name="Americans")
    added = client.post("/settings/audiences/meta/links", data={"segment_id": str(segment.id)}, headers=auth)
    assert added.status_code == 200 and "Americans" in added.get_data(as_text=True)
    [link] = db.scalars(select(AudienceLink)).all()
    assert jobs.names() == ["sync_audience"]
    again = client.post("/settings/audiences/meta/links", data={"segment_id": str(segment.id)}, headers=auth)
    assert "already synced" in again.get_data(as_text=True) and count(db, AudienceLink) == 1
    # Changing the account while a segment is linked is refused.
    moved = client.post("/settings/audiences/meta/account", data={"account_id": "111"}, headers=auth)
    assert "Remove the synced segments first" in moved.get_data(as_text=True)
    assert client.post(f"/settings/audiences/links/{link.id}/sync", headers=auth).status_code == 200
    assert client.post(f"/settings/audiences/links/{link.id}/delete", headers=auth).status_code == 200
    assert count(db, AudienceLink) == 0


def test_another_shops_segment_and_links_are_refused(db, shop, other_shop, connected, client, auth, token_for):
    connections.choose_account(db, connected, "111")
    theirs = f.segment(db, other_shop, f.where(f.rule("country", "in", ["US"])))
    answer = client.post("/settings/audiences/meta/links", data={"segment_id": str(theirs.id)}, headers=auth)
    assert "Choose one of your segments" in answer.get_data(as_text=True)
    assert count(db, AudienceLink) == 0
    mine = f.segment(db, shop, f.where(f.rule("country", "in", ["US"])))
    link = connections.add_link(db, connected, mine)
    other = {"Authorization": f"Bearer {token_for(other_shop.domain)}", "HX-Request": "true"}
    assert client.post(f"/settings/audiences/links/{link.id}/sync", headers=other).status_code == 404
    assert client.post(f"/settings/audiences/links/{link.id}/delete", headers=other).status_code == 404
    assert client.post("/settings/audiences/meta/disconnect", headers=other).status_code == 404
    assert count(db, AudienceLink) == 1 and count(db, AdConnection) == 1


@pytest.mark.parametrize("path, form", [
    ("/settings/audiences/meta/links", {"segment_id": "abc"}),
    ("/settings/audiences/meta/links", {"segment_id": "99999999999999999999999"}),
    ("/settings/audiences/meta/links", {"segment_id": "-1"}),
    ("/settings/audiences/meta/links", {}),
    ("/settings/audiences/meta/account", {"account_id": "x" * 5000}),
    ("/settings/audiences/meta/account", {}),
    ("/settings/audiences/meta/emails", {"allow_emails": "\u2603"}),
    ("/settings/audiences/google/links", {"segment_id": "1"}),
    ("/settings/audiences/tiktok/links", {"segment_id": "1"}),
    ("/settings/audiences/links/99999999999999999999999/sync", {}),
    ("/settings/audiences/links/abc/delete", {}),
])
def test_bad_input_never_errors_and_saves_nothing(db, shop, connected, client, auth, path, form):
    plain = {"Authorization": auth["Authorization"]}
    for headers in (auth, plain):
        response = client.post(path, data=form, headers=headers)
        assert response.status_code < 500, (path, form, response.status_code)
    assert count(db, AudienceLink) == 0
    db.expire_all()
    connection = db.get(AdConnection, connected.id)
    assert connection.account_id is None and connection.allow_emails is False


def test_emails_setting_and_disconnect(db, shop, connected, client, auth):
    assert client.post("/settings/audiences/meta/emails", data={"allow_emails": "1"}, headers=auth).status_code == 200
    db.expire_all()
    assert db.get(AdConnection, connected.id).allow_emails is True
    body = client.post("/settings/audiences/meta/disconnect", headers=auth).get_data(as_text=True)
    assert 'id="connect-meta"' in body and count(db, AdConnection) == 0


def test_merchant_routes_need_a_session_token(db, shop, client):
    assert client.post("/settings/audiences/meta/disconnect").status_code == 401
    assert client.get("/settings/audiences/", headers={"HX-Request": "true"}).status_code == 401


def test_the_oauth_pages_are_rate_limited_per_address(db, shop, app, monkeypatch):
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "AUDIENCE_OAUTH_PER_MINUTE", 3)
    client = app.test_client()
    answers = [client.get("/audiences/oauth/meta/callback", base_url=BASE).status_code for _ in range(7)]
    # Seven requests in at most two one-minute windows: one window saw a fourth (even across a minute's turn).
    assert 429 in answers and set(answers) == {403, 429}


def test_connecting_again_resumes_the_links_that_failed(db, shop, connected, fake_meta, app, jobs):
    from kinnekt.models.audience import LinkStatus
    connections.choose_account(db, connected, "111")
    link = connections.add_link(db, connected, f.segment(db, shop, f.where(f.rule("country", "in", ["US"]))))
    link.status = LinkStatus.FAILED
    db.commit()
    client = app.test_client()
    _r, state, _q = start_login(client, shop.id)
    assert finish_login(client, fake_meta, state).status_code == 200
    assert [args for name, args, *_ in jobs.jobs if name == "sync_audience"] == [(link.id,)]
    db.expire_all()
    assert db.get(AdConnection, connected.id).account_id == "111"  # still reachable: kept


def test_linking_a_segment_syncs_it_through_the_queue(db, shop, connected, fake_meta, client, auth):
    """End to end: the card's form, the job on the app's own queue, the audience at the (fake) platform."""
    from kinnekt.segments import membership
    from tests.helpers import wait_until
    people = [f.subscriber(db, shop, country="US") for _ in range(2)]
    segment = f.segment(db, shop, f.where(f.rule("country", "in", ["US"])), name="Americans", kind="manual")
    membership.build(db, segment.id)
    assert client.post("/settings/audiences/meta/account", data={"account_id": "111"}, headers=auth).status_code == 200
    assert client.post("/settings/audiences/meta/links", data={"segment_id": str(segment.id)},
                       headers=auth).status_code == 200
    bind_shop(None)
    assert wait_until(db, lambda: db.scalar(select(AudienceLink.last_synced_at)) is not None)
    link = db.scalar(select(AudienceLink))
    assert link.member_count == 2 and len(fake_meta.members(link.audience_id)) == 2
    body = client.get("/settings/audiences/", headers=auth).get_data(as_text=True)
    assert "Synced" in body and "Americans" in body and link.audience_id in body
    assert not any(p.phone in body or p.phone[1:] in body for p in people)  # the card shows no number
