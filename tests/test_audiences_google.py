"""Google Ads Customer Match against the fake Google Ads API: the OAuth round trip (refresh token stored
encrypted), a CRM-based user list, offline user data jobs of create and remove operations run and polled, partial
failures, RESOURCE_EXHAUSTED with backoff, a refused refresh token."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from kinnekt.audiences import connections, tasks
from kinnekt.db import utcnow
from kinnekt.models import AdConnection, AudienceLink
from kinnekt.models.audience import LinkStatus
from kinnekt.segments import membership
from kinnekt.segments.exports import sha256_hex
from tests import factories as f

BASE = "https://kinnekt.test"
US = f.where(f.rule("country", "in", ["US"]))


@pytest.fixture(autouse=True)
def fresh_rate_limit(monkeypatch):
    from kinnekt.storefront.limits import LocalCounter
    from kinnekt.web import audience_oauth
    monkeypatch.setattr(audience_oauth, "_attempts", LocalCounter())


def login(app, shop, fake_google):
    client = app.test_client()
    with app.app_context():
        token = connections.start_token(shop.id, "google")
    started = client.get("/audiences/oauth/google/start", query_string={"t": token}, base_url=BASE)
    assert started.status_code == 302
    query = parse_qs(urlsplit(started.headers["Location"]).query)
    assert query["scope"] == ["https://www.googleapis.com/auth/adwords"] and query["access_type"] == ["offline"]
    return client.get("/audiences/oauth/google/callback", base_url=BASE,
                      query_string={"code": fake_google.issue_code(), "state": query["state"][0]})


@pytest.fixture
def google_link(db, shop, app, fake_google, jobs):
    """The shop connected to Google Ads through the login flow, customer 1234567890, a built segment of three."""
    assert login(app, shop, fake_google).status_code == 200
    connection = db.scalar(select(AdConnection).where(AdConnection.platform == "google"))
    connections.choose_account(db, connection, "1234567890")
    people = [f.subscriber(db, shop, country="US") for _ in range(3)]
    segment = f.segment(db, shop, US, name="Americans", kind="manual")
    membership.build(db, segment.id)
    link = connections.add_link(db, connection, segment)
    jobs.jobs.clear()
    return {"link": link, "segment": segment, "people": people, "connection": connection}


def members(db, fake, link_id):
    link = db.get(AudienceLink, link_id)
    db.refresh(link)
    return fake.members(link.audience_id)


def test_login_stores_the_refresh_token_encrypted_and_lists_customers(db, shop, app, fake_google):
    assert login(app, shop, fake_google).status_code == 200
    connection = db.scalar(select(AdConnection))
    refresh = connections.refresh_token(connection)
    assert refresh.startswith("1//refresh") and refresh not in connection.refresh_token_enc
    assert [a["id"] for a in connection.accounts] == ["1234567890", "9876543210"]
    assert connection.accounts[0]["name"] == "123-456-7890"


def test_first_sync_creates_the_list_and_uploads_through_a_job(db, shop, google_link, fake_google):
    assert tasks.run_sync(db, google_link["link"].id) == "synced"
    [user_list] = fake_google.calls("user_list")
    assert user_list["body"]["operations"][0]["create"]["crmBasedUserList"] == {"uploadKeyType": "CONTACT_INFO"}
    kinds = [c["kind"] for c in fake_google.calls() if c["kind"] not in ("token", "customers")]
    assert kinds == ["user_list", "job", "add_operations", "run", "search", "search"]
    expected = {(sha256_hex(p.phone), None) for p in google_link["people"]}  # E.164 with "+", hashed
    assert members(db, fake_google, google_link["link"].id) == expected
    job = next(iter(fake_google.jobs.values()))
    assert job["consent"] == {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}


def test_leavers_are_removed_by_a_remove_job(db, shop, google_link, fake_google):
    link_id = google_link["link"].id
    tasks.run_sync(db, link_id)
    leaving = google_link["people"][0]
    leaving.status = "unsubscribed"
    db.commit()
    fake_google.log.clear()
    tasks.run_sync(db, link_id)
    [ops] = [c for c in fake_google.calls("add_operations")]
    assert ops == {"kind": "add_operations", "count": 1, "ops": ["remove"]}
    assert (sha256_hex(leaving.phone), None) not in members(db, fake_google, link_id)


def test_a_partial_failure_is_counted(db, shop, google_link, fake_google, monkeypatch):
    from kinnekt.audiences import google
    real = google.GoogleAudiences.identifiers
    bad_phone = google_link["people"][1].phone

    def one_malformed(self, phone, email, allow):
        return ("not-a-hash", None) if phone == bad_phone else real(self, phone, email, allow)

    monkeypatch.setattr(google.GoogleAudiences, "identifiers", one_malformed)
    assert tasks.run_sync(db, google_link["link"].id) == "synced"
    link = db.get(AudienceLink, google_link["link"].id)
    assert link.last_invalid == 1 and "refused by the platform" in link.last_error


def test_resource_exhausted_retries_after_googles_delay(db, shop, google_link, fake_google, jobs):
    fake_google.fail_next("quota")
    before = utcnow()
    assert tasks.run_sync(db, google_link["link"].id) == "retrying"
    link = db.get(AudienceLink, google_link["link"].id)
    assert link.status == LinkStatus.RETRYING and "slow down" in link.last_error
    [when] = [j[3] for j in jobs.jobs if j[0] == "sync_audience"]
    assert (when - before).total_seconds() == pytest.approx(30, abs=5)
    assert tasks.run_sync(db, google_link["link"].id) == "synced"


def test_a_refused_refresh_token_asks_to_connect_again(db, shop, google_link, fake_google):
    connection = db.get(AdConnection, google_link["connection"].id)
    connection.access_token_expires_at = utcnow()  # expired: the sync refreshes first
    db.commit()
    fake_google.refresh_tokens.clear()
    assert tasks.run_sync(db, google_link["link"].id) == "failed"
    assert "Google refused the authorization" in db.get(AdConnection, connection.id).error
    assert db.get(AudienceLink, google_link["link"].id).status == LinkStatus.FAILED


def test_an_expired_access_token_is_refreshed_and_saved(db, shop, google_link, fake_google):
    connection = db.get(AdConnection, google_link["connection"].id)
    old = connections.access_token(connection)
    connection.access_token_expires_at = utcnow()
    db.commit()
    assert tasks.run_sync(db, google_link["link"].id) == "synced"
    db.expire_all()
    fresh = db.get(AdConnection, connection.id)
    assert connections.access_token(fresh) != old and fresh.access_token_expires_at > utcnow()
    assert [c["grant_type"] for c in fake_google.calls("token")][-1] == "refresh_token"


def test_the_card_offers_google_and_refuses_bad_choices(db, shop, google_link, client, auth):
    body = client.get("/settings/audiences/", headers=auth).get_data(as_text=True)
    assert "/audiences/oauth/google/start?t=" in body and "123-456-7890 (1234567890)" in body
    for path, form in (("/settings/audiences/google/account", {"account_id": "5555555555"}),
                       ("/settings/audiences/google/links", {"segment_id": "x"})):
        response = client.post(path, data=form, headers=auth)
        assert response.status_code == 200 and 'id="audiences-error"' in response.get_data(as_text=True)
    db.expire_all()
    assert db.get(AdConnection, google_link["connection"].id).account_id == "1234567890"
    assert len(db.scalars(select(AudienceLink)).all()) == 1
