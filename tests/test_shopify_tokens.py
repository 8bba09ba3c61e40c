"""Offline tokens: token exchange (exact request), encrypted storage, refresh ahead of expiry with rotation,
per-shop locking, revoked refresh tokens, static custom-app tokens — against the fake Shopify."""
from __future__ import annotations

import datetime as dt
import os
import threading

import pytest
from sqlalchemy import select

from kinnekt.db import Session, utcnow
from kinnekt.models import Shop
from kinnekt.shopify import session_token, tokens
from tests.conftest import make_shop
from tests.fake_shopify import connect

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


def _stored(shop_id: int) -> Shop:
    Session.expire_all()
    return Session.scalar(select(Shop).where(Shop.id == shop_id).execution_options(populate_existing=True))


def test_token_exchange_sends_the_documented_request(app, db, fake_shopify, token_for):
    id_token = token_for("alpha.myshopify.com")
    before = utcnow()
    granted = tokens.exchange_session_token("alpha.myshopify.com", id_token)
    [call] = fake_shopify.calls("token:urn:ietf:params:oauth:grant-type:token-exchange")
    assert call["shop"] == "alpha.myshopify.com"
    assert call["body"] == {
        "client_id": app.config["SHOPIFY_API_KEY"], "client_secret": app.config["SHOPIFY_API_SECRET"],
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": id_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "requested_token_type": "urn:shopify:params:oauth:token-type:offline-access-token", "expiring": "1"}
    assert granted.access_token.startswith("shpua_") and granted.refresh_token.startswith("shprt_")
    assert before + dt.timedelta(minutes=59) < granted.expires_at <= utcnow() + dt.timedelta(minutes=60)
    assert granted.refresh_token_expires_at > utcnow() + dt.timedelta(days=89)
    assert "read_customers" in granted.scope


def test_token_exchange_with_a_refused_session_token(db, fake_shopify):
    forged = session_token.mint("alpha.myshopify.com", "test-api-key", "another-secret-another-secret-123456")
    with pytest.raises(tokens.InvalidSessionToken):
        tokens.exchange_session_token("alpha.myshopify.com", forged)


def test_tokens_are_stored_encrypted(db, fake_shopify):
    shop = make_shop()
    grant = connect(fake_shopify, shop)
    row = Session.execute(select(Shop.access_token_enc, Shop.refresh_token_enc).where(Shop.id == shop.id)).one()
    assert grant.access_token not in row.access_token_enc and grant.refresh_token not in row.refresh_token_enc
    assert tokens.cipher().decrypt(row.access_token_enc) == grant.access_token
    assert tokens.cipher().decrypt(row.refresh_token_enc) == grant.refresh_token
    stored = _stored(shop.id)
    assert stored.token_kind == "expiring" and not stored.needs_reauth
    assert stored.access_token_expires_at > utcnow() and stored.refresh_token_expires_at > utcnow()


def test_a_fresh_token_is_used_without_calling_shopify(db, fake_shopify):
    shop = make_shop()
    grant = connect(fake_shopify, shop)
    assert tokens.access_token(shop) == grant.access_token
    assert fake_shopify.calls("token:refresh_token") == []


def test_refresh_ahead_of_expiry_rotates_and_saves_the_new_pair(db, fake_shopify):
    shop = make_shop()
    first = connect(fake_shopify, shop, access_ttl=120)  # expires within the 5-minute refresh-ahead window
    new_access = tokens.access_token(shop)
    [call] = fake_shopify.calls("token:refresh_token")
    assert call["body"]["refresh_token"] == first.refresh_token
    assert call["body"]["grant_type"] == "refresh_token"
    assert new_access != first.access_token
    stored = _stored(shop.id)
    assert tokens.cipher().decrypt(stored.access_token_enc) == new_access
    new_refresh = tokens.cipher().decrypt(stored.refresh_token_enc)
    assert new_refresh != first.refresh_token  # rotated, and the new one saved with the access token
    assert stored.access_token_expires_at > utcnow() + dt.timedelta(minutes=55)
    assert tokens.access_token(shop) == new_access  # fresh now: no second refresh
    assert len(fake_shopify.calls("token:refresh_token")) == 1


def test_the_replaced_refresh_token_dies_once_its_successor_is_used(db, fake_shopify):
    shop = make_shop()
    first = connect(fake_shopify, shop, access_ttl=1)
    tokens.access_token(shop)                           # first -> second
    tokens.force_refresh(shop, tokens.access_token(shop))  # second -> third: first is now used up
    with pytest.raises(tokens.GrantRejected) as refused:
        tokens.refresh_tokens(shop.domain, first.refresh_token)
    assert refused.value.error == "invalid_grant"


def test_a_revoked_refresh_token_marks_the_shop_for_reauth(db, fake_shopify):
    shop = make_shop()
    connect(fake_shopify, shop, access_ttl=1)
    fake_shopify.shop(shop.domain).revoked = True
    with pytest.raises(tokens.NotConnected):
        tokens.access_token(shop)
    assert _stored(shop.id).needs_reauth
    calls = len(fake_shopify.calls("token:refresh_token"))
    with pytest.raises(tokens.NotConnected):  # no more calls until the merchant comes back
        tokens.access_token(shop)
    assert len(fake_shopify.calls("token:refresh_token")) == calls == 1


def test_an_expired_refresh_token_is_not_sent(db, fake_shopify):
    shop = make_shop()
    connect(fake_shopify, shop, access_ttl=1)
    Session.execute(Shop.__table__.update().where(Shop.id == shop.id)
                    .values(refresh_token_expires_at=utcnow() - dt.timedelta(days=1)))
    Session.commit()
    with pytest.raises(tokens.NotConnected):
        tokens.access_token(shop)
    assert fake_shopify.calls("token:refresh_token") == []
    assert _stored(shop.id).needs_reauth


def test_a_failing_refresh_keeps_a_still_valid_token(db, fake_shopify, monkeypatch):
    shop = make_shop()
    grant = connect(fake_shopify, shop, access_ttl=120)
    monkeypatch.setattr(tokens, "refresh_tokens", lambda *_a: (_ for _ in ()).throw(
        tokens.TokenEndpointUnavailable("down")))
    assert tokens.access_token(shop) == grant.access_token
    assert not _stored(shop.id).needs_reauth


def _race(app, shop_id: int, threads: int = 4) -> list[str]:
    results, errors = [], []
    barrier = threading.Barrier(threads)

    def work():
        try:
            with app.app_context():
                shop = Session.get(Shop, shop_id)
                barrier.wait()
                results.append(tokens.access_token(shop))
                Session.remove()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not errors, errors
    return results


def test_concurrent_refreshes_of_one_shop_make_one_call(app, db, fake_shopify):
    shop = make_shop()
    connect(fake_shopify, shop, access_ttl=60)
    results = _race(app, shop.id)
    assert len(set(results)) == 1 and len(results) == 4
    assert len(fake_shopify.calls("token:refresh_token")) == 1


def test_concurrent_refreshes_serialise_on_the_redis_lock(app, db, fake_shopify, monkeypatch):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("Redis is not running")
    monkeypatch.setitem(app.config, "REDIS_URL", REDIS_URL)
    shop = make_shop()
    connect(fake_shopify, shop, access_ttl=60)
    held = []
    real_refresh = tokens.refresh_tokens

    def observed_refresh(domain, refresh_token):
        lock_key = f"kinnekt:shop-token:{domain}"
        held.append(redis.Redis.from_url(REDIS_URL).exists(lock_key))
        return real_refresh(domain, refresh_token)

    monkeypatch.setattr(tokens, "refresh_tokens", observed_refresh)
    results = _race(app, shop.id)
    assert len(set(results)) == 1
    assert held == [1]  # one refresh, made while the shared lock was held


def test_static_tokens_never_refresh(db, fake_shopify):
    shop = make_shop()
    static = fake_shopify.static_token(shop.domain)
    tokens.save_static_token(shop, static)
    assert tokens.access_token(shop) == static
    stored = _stored(shop.id)
    assert stored.token_kind == "static" and stored.access_token_expires_at is None
    with pytest.raises(tokens.NotConnected):  # Shopify refused it: nothing to refresh with
        tokens.force_refresh(shop, static)
    assert _stored(shop.id).needs_reauth and fake_shopify.calls("token:refresh_token") == []


def test_tokens_unreadable_with_another_key_need_reauth(app, db, fake_shopify, monkeypatch):
    shop = make_shop()
    connect(fake_shopify, shop)
    monkeypatch.setitem(app.config, "TOKEN_ENCRYPTION_KEY", "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItMDA=")
    with pytest.raises(tokens.NotConnected):
        tokens.access_token(shop)
    assert _stored(shop.id).needs_reauth


def test_uninstalled_shop_has_no_token(db, fake_shopify):
    shop = make_shop()
    connect(fake_shopify, shop)
    shop.uninstalled_at = utcnow()
    Session.commit()
    tokens.drop_tokens(shop)
    with pytest.raises(tokens.NotConnected):
        tokens.access_token(shop)
    assert _stored(shop.id).access_token_enc is None


def test_a_hiccup_at_the_token_endpoint_is_retried(db, fake_shopify, token_for, monkeypatch):
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "SHOPIFY_RETRY_BASE_SECONDS", 0.01)
    fake_shopify.fail_next_token(503)
    granted = tokens.exchange_session_token("alpha.myshopify.com", token_for("alpha.myshopify.com"))
    assert granted.access_token
    assert len(fake_shopify.calls("token:urn:ietf:params:oauth:grant-type:token-exchange")) == 2


def test_an_unavailable_token_endpoint_is_not_a_refused_refresh(db, fake_shopify, monkeypatch):
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "SHOPIFY_RETRY_BASE_SECONDS", 0.01)
    shop = make_shop()
    connect(fake_shopify, shop, access_ttl=0)  # expired: nothing to fall back on
    fake_shopify.fail_next_token(503, 3)
    with pytest.raises(tokens.TokenEndpointUnavailable):
        tokens.access_token(shop)
    assert not _stored(shop.id).needs_reauth  # Shopify had trouble; the refresh token is still good
    assert tokens.access_token(shop)  # and works once Shopify answers again
