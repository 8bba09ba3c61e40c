"""`flask shops add`: a custom app's static token, checked against the fake Shopify, stored encrypted."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Segment, Shop
from kinnekt.shopify import tokens

DOMAIN = "custom-store.myshopify.com"


def _run(app, *args, env=None):
    return app.test_cli_runner().invoke(args=["shops", "add", *args], env=env)


def _stored() -> Shop | None:
    Session.remove()
    return Session.scalar(select(Shop).where(Shop.domain == DOMAIN))


def test_registers_a_custom_app_store(app, db, fake_shopify):
    fake = fake_shopify.shop(DOMAIN)
    fake.name, fake.timezone, fake.currency = "Custom Store", "Australia/Sydney", "AUD"
    token = fake_shopify.static_token(DOMAIN)
    result = _run(app, "--domain", DOMAIN, "--token", token)
    assert result.exit_code == 0, result.output
    assert "Custom Store (custom-store.myshopify.com) is registered: time zone Australia/Sydney" in result.output
    shop = _stored()
    assert shop.installed and not shop.needs_reauth and shop.token_kind == "static"
    assert (shop.timezone, shop.currency, shop.name) == ("Australia/Sydney", "AUD", "Custom Store")
    assert token not in shop.access_token_enc and tokens.access_token(shop) == token
    assert shop.access_token_expires_at is None and shop.refresh_token_enc is None
    assert shop.sync_status == "queued"  # no Redis here: start-up recovery starts it
    assert Session.scalar(select(Segment.id).where(Segment.shop_id == shop.id, Segment.name == "All subscribers"))
    [call] = fake_shopify.calls("graphql:KinnektShop")
    assert call["token"] == token


def test_the_given_time_zone_wins(app, db, fake_shopify):
    result = _run(app, "--domain", DOMAIN, "--token", fake_shopify.static_token(DOMAIN), "--timezone", "Europe/Paris")
    assert result.exit_code == 0, result.output
    assert _stored().timezone == "Europe/Paris"


def test_the_token_can_come_from_the_environment(app, db, fake_shopify):
    result = _run(app, "--domain", DOMAIN, env={"SHOPIFY_ADMIN_TOKEN": fake_shopify.static_token(DOMAIN)})
    assert result.exit_code == 0, result.output
    assert _stored().token_kind == "static"


@pytest.mark.parametrize("domain", ["custom-store.com", "custom-store.myshopify.com.evil.com",
                                    "https://custom-store.myshopify.com", "admin.shopify.com/store/custom-store"])
def test_a_bad_domain_is_refused_before_calling_shopify(app, db, fake_shopify, domain):
    result = _run(app, "--domain", domain, "--token", "shpat_x")
    assert result.exit_code == 2 and "<name>.myshopify.com" in result.output
    assert fake_shopify.calls() == [] and _stored() is None


def test_an_unknown_time_zone_is_refused(app, db, fake_shopify):
    result = _run(app, "--domain", DOMAIN, "--token", "shpat_x", "--timezone", "Mars/Olympus")
    assert result.exit_code == 2 and "not an IANA time zone" in result.output
    assert fake_shopify.calls() == [] and _stored() is None


def test_a_refused_token_stores_nothing(app, db, fake_shopify):
    result = _run(app, "--domain", DOMAIN, "--token", "shpat_not_a_real_token")
    assert result.exit_code == 1 and "Shopify refused the token" in result.output
    assert _stored() is None


def test_a_token_with_spaces_is_refused(app, db, fake_shopify):
    result = _run(app, "--domain", DOMAIN, "--token", "shpat_abc def")
    assert result.exit_code == 2 and _stored() is None


def test_a_token_of_another_store_is_refused(app, db, fake_shopify):
    token = fake_shopify.static_token(DOMAIN)
    fake_shopify.shop(DOMAIN).domain = "someone-else.myshopify.com"
    result = _run(app, "--domain", DOMAIN, "--token", token)
    assert result.exit_code == 1 and "belongs to someone-else.myshopify.com" in result.output
    assert _stored() is None


def test_adding_again_replaces_the_token(app, db, fake_shopify):
    first, second = fake_shopify.static_token(DOMAIN), fake_shopify.static_token(DOMAIN)
    assert _run(app, "--domain", DOMAIN, "--token", first).exit_code == 0
    result = _run(app, "--domain", DOMAIN, "--token", second)
    assert result.exit_code == 0 and "already queued" in result.output
    shop = _stored()
    assert tokens.access_token(shop) == second
    assert Session.query(Shop).count() == 1
