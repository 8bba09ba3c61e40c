"""Install by token exchange on the first session token, and the install job, against the fake Shopify."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from kinnekt import shops
from kinnekt.db import Session, utcnow
from kinnekt.models import Segment, Shop, SyncOperation
from kinnekt.shopify import install, tokens
from tests.conftest import make_shop
from tests.fake_shopify import connect

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
EXCHANGE = "token:urn:ietf:params:oauth:grant-type:token-exchange"
DOMAIN = "gamma.myshopify.com"


def _load(client, token, path="/segments/"):
    return client.get(path, headers={"Authorization": f"Bearer {token}", "HX-Request": "true"})


def _shop(domain=DOMAIN) -> Shop | None:
    Session.remove()
    return shops.by_domain(domain)


def test_first_session_token_installs_the_shop(app, client, db, fake_shopify, token_for):
    fake = fake_shopify.shop(DOMAIN)
    fake.name, fake.timezone, fake.currency = "Gamma Goods", "Asia/Tokyo", "JPY"
    response = _load(client, token_for(DOMAIN))
    assert response.status_code == 200
    assert len(fake_shopify.calls(EXCHANGE)) == 1
    assert app.extensions["kinnekt_queue"].drain(30)

    shop = _shop()
    assert shop.installed and not shop.needs_reauth and shop.token_kind == "expiring"
    assert shop.access_token_expires_at is not None and shop.refresh_token_enc
    assert (shop.name, shop.timezone, shop.currency) == ("Gamma Goods", "Asia/Tokyo", "JPY")
    assert shop.email == "owner@example.com" and shop.primary_domain == "shop.example.com"
    names = set(Session.scalars(select(Segment.name).where(Segment.shop_id == shop.id)))
    assert {"All subscribers", "Mobile Popup", "Shareable Link"} <= names
    assert shop.sync_status == "running"
    operations = Session.scalars(select(SyncOperation).where(SyncOperation.shop_id == shop.id))
    kinds = {op.kind: op.status for op in operations}
    assert kinds == {"products": "running", "collections": "running", "customers": "running", "orders": "running"}
    assert len(fake_shopify.calls("graphql:KinnektBulkQuery", DOMAIN)) == 4


def test_the_page_load_waits_only_for_the_exchange(client, db, fake_shopify, token_for, monkeypatch):
    queued = []
    monkeypatch.setattr(install, "enqueue_install", lambda shop: queued.append(shop.id))
    assert _load(client, token_for(DOMAIN)).status_code == 200
    assert [c["kind"] for c in fake_shopify.calls()] == [EXCHANGE]  # no GraphQL inside the request
    assert queued == [_shop().id]


def test_a_known_connected_shop_makes_no_call(client, db, fake_shopify, token_for):
    shop = make_shop(DOMAIN)
    connect(fake_shopify, shop)
    assert _load(client, token_for(DOMAIN)).status_code == 200
    assert fake_shopify.calls() == []


def test_refused_session_token_asks_app_bridge_for_a_new_one(client, db, fake_shopify, token_for):
    fake_shopify.refuse_session_tokens = True
    response = _load(client, token_for(DOMAIN))
    assert response.status_code == 401
    assert response.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"
    assert _shop() is None  # nothing stored


def test_document_load_with_a_refused_token_bounces(client, db, fake_shopify, token_for):
    fake_shopify.refuse_session_tokens = True
    response = client.get(f"/segments/?shop={DOMAIN}&id_token={token_for(DOMAIN)}", headers={"Accept": "text/html"})
    assert response.status_code == 302 and "/auth/session-token-bounce" in response.headers["Location"]


def test_unreachable_token_endpoint_serves_an_unknown_shop_nothing(app, client, db, fake_shopify, token_for):
    fake_shopify.fail_next_token(503, times=2)  # the exchange tries twice inside a page load
    response = _load(client, token_for(DOMAIN))
    assert response.status_code == 503 and "could not reach Shopify" in response.get_data(as_text=True)
    assert _shop() is None  # nothing registered
    assert _load(client, token_for(DOMAIN)).status_code == 200  # the next page load installs it
    shop = _shop()
    assert shop.installed and not shop.needs_reauth and shop.access_token_enc


def test_unreachable_token_endpoint_does_not_reinstall_an_uninstalled_shop(app, client, db, fake_shopify,
                                                                           token_for, monkeypatch):
    shop = make_shop(DOMAIN, sync_status="done", last_synced_at=utcnow())
    uninstalled_at = shop.installed_at
    shop.uninstalled_at = uninstalled_at
    Session.commit()
    monkeypatch.setattr(tokens, "exchange_session_token",
                        lambda *_a: (_ for _ in ()).throw(tokens.TokenEndpointUnavailable("down")))
    for headers in ({"HX-Request": "true"}, {"Accept": "application/json"}):
        response = client.get("/segments/", headers={"Authorization": f"Bearer {token_for(DOMAIN)}", **headers})
        assert response.status_code == 503
    shop = _shop()
    assert shop.uninstalled_at == uninstalled_at and not shop.installed and not shop.needs_reauth
    assert shop.sync_status == "done"


def test_unreachable_token_endpoint_still_serves_a_shop_installed_here(app, client, db, fake_shopify, token_for):
    make_shop(DOMAIN, needs_reauth=True)
    fake_shopify.fail_next_token(503, times=2)
    assert _load(client, token_for(DOMAIN)).status_code == 200
    shop = _shop()
    assert shop.installed and shop.needs_reauth


def test_a_shop_needing_reauth_is_repaired_without_a_new_sync(app, client, db, fake_shopify, token_for):
    shop = make_shop(DOMAIN, needs_reauth=True, sync_status="done", last_synced_at=utcnow())
    assert _load(client, token_for(DOMAIN)).status_code == 200
    assert app.extensions["kinnekt_queue"].drain(30)
    shop = _shop()
    assert not shop.needs_reauth and tokens.access_token(shop)
    assert shop.sync_status == "done" and fake_shopify.calls("graphql:KinnektBulkQuery") == []
    assert fake_shopify.calls("graphql:KinnektShop")  # details refreshed


def test_reinstall_after_uninstall_syncs_again(app, client, db, fake_shopify, token_for):
    shop = make_shop(DOMAIN, sync_status="done", last_synced_at=utcnow())
    shop.uninstalled_at = utcnow()
    Session.commit()
    assert _load(client, token_for(DOMAIN)).status_code == 200
    assert app.extensions["kinnekt_queue"].drain(30)
    shop = _shop()
    assert shop.installed and shop.uninstalled_at is None
    assert shop.sync_status == "running" and len(fake_shopify.calls("graphql:KinnektBulkQuery")) == 4


def test_concurrent_first_loads_install_once(app, db, fake_shopify, token_for):
    barrier = threading.Barrier(3)
    statuses = []

    def load():
        client = app.test_client()
        barrier.wait()
        statuses.append(_load(client, token_for(DOMAIN)).status_code)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200, 200, 200]
    assert Session.scalar(select(func.count()).select_from(Shop).where(Shop.domain == DOMAIN)) == 1
    assert len(fake_shopify.calls(EXCHANGE)) == 1


def test_the_demo_shop_is_never_exchanged(client, db, fake_shopify, token_for):
    make_shop(DOMAIN, is_demo=True, needs_reauth=True)
    assert _load(client, token_for(DOMAIN)).status_code == 200
    assert fake_shopify.calls() == []


def test_shopify_time_zone_unknown_to_us_falls_back_to_utc(app, db, fake_shopify):
    shop = make_shop(DOMAIN)
    connect(fake_shopify, shop)
    fake_shopify.shop(DOMAIN).timezone = "Mars/Olympus_Mons"
    from kinnekt.shopify.graphql import client_for
    details = install.fetch_shop_details(client_for(shop))
    assert details["timezone"] == "UTC"
