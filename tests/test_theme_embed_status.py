"""Settings shows whether the popup's app embed is on in the live theme (Admin API: the MAIN theme's
config/settings_data.json, at the fake Shopify), loaded after the page, with the theme editor deep link."""
from __future__ import annotations

import json

import pytest

from kinnekt.shopify import theme_embed
from tests.conftest import make_shop
from tests.fake_shopify import connect

pytestmark = pytest.mark.usefixtures("settled_jobs")

HANDLE = "kinnekt-sms"
OURS = f"shopify://apps/{HANDLE}/blocks/popup/4f0c8a55-2b7e-4d0e-9d6b-1b3c7e2f9a10"
HEADER = """/*
 * ------------------------------------------------------------
 * IMPORTANT: The contents of this file are auto-generated.
 * ------------------------------------------------------------
 */
"""


def settings_data(blocks: dict | None = None, *, preset: bool = False) -> str:
    """A config/settings_data.json as Shopify writes it (its comment header, `current` and its `blocks`)."""
    current = {"type_body_font": "assistant_n4", "sections": {}, "blocks": blocks or {}}
    if preset:
        return HEADER + json.dumps({"current": "Default", "presets": {"Default": current}}, indent=2)
    return HEADER + json.dumps({"current": current, "presets": {"Default": {}}}, indent=2)


def embed(type_=OURS, disabled=False) -> dict:
    return {"type": type_, "disabled": disabled, "settings": {"delay_seconds": 5}}


@pytest.mark.parametrize("blocks, preset, state", [
    ({"1786": embed()}, False, "on"),
    ({"1786": embed()}, True, "on"),
    ({"1786": embed(disabled=True)}, False, "off"),
    ({}, False, "not_added"),
    ({"99": embed(f"shopify://apps/other-app/blocks/popup/{'0' * 8}")}, False, "not_added"),
    ({"99": embed(f"shopify://apps/{HANDLE}/blocks/banner/{'0' * 8}")}, False, "not_added"),
    ({"1": embed(disabled=True), "2": embed()}, False, "on"),
])
def test_the_embed_state_is_read_from_settings_data(blocks, preset, state):
    assert theme_embed.embed_state(settings_data(blocks, preset=preset), HANDLE) == state


@pytest.mark.parametrize("text", ["", "[]", "/* only a comment */", "{not json"])
def test_a_settings_file_that_is_not_shopifys_object_is_refused(text):
    with pytest.raises(ValueError):
        theme_embed.embed_state(text, HANDLE)


@pytest.mark.parametrize("text", ['{"current": 3}', '{"current": "Gone", "presets": {}}', '{"current": {"blocks": []}}',
                                  '{"current": {"blocks": {"1": "x", "2": {"type": 5}}}}'])
def test_odd_but_valid_settings_mean_not_added(text):
    assert theme_embed.embed_state(text, HANDLE) == "not_added"


def test_the_editor_link_selects_the_block_in_app_embeds():
    assert theme_embed.editor_url("alpha.myshopify.com", "0123abcd") == (
        "https://alpha.myshopify.com/admin/themes/current/editor?context=apps&activateAppId=0123abcd/popup")


@pytest.fixture
def live(db, fake_shopify, shop):
    connect(fake_shopify, shop)
    return fake_shopify.shop(shop.domain)


def card(client, auth) -> str:
    response = client.get("/settings/signup/popup/embed", headers=auth)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_settings_says_on_with_the_live_themes_name_and_links_the_editor(app, client, auth, live):
    live.add_theme("Horizon (draft)", role="UNPUBLISHED", files={"config/settings_data.json": settings_data()})
    live.add_theme("Dawn", files={"config/settings_data.json": settings_data({"1786": embed()})})
    html = card(client, auth)
    assert 'id="popup-embed"' in html and "App embed on" in html and "Dawn" in html
    assert "Horizon" not in html
    key = app.config["SHOPIFY_API_KEY"]
    assert f"https://alpha.myshopify.com/admin/themes/current/editor?context=apps&amp;activateAppId={key}/popup" \
        in html


@pytest.mark.parametrize("blocks, words", [
    ({"1786": embed(disabled=True)}, "App embed off"),
    ({}, "Not switched on"),
])
def test_settings_says_off_or_not_added_and_offers_to_switch_it_on(client, auth, live, blocks, words):
    live.add_theme("Dawn", files={"config/settings_data.json": settings_data(blocks)})
    html = card(client, auth)
    assert words in html and "Switch it on in the theme editor" in html


def test_without_read_themes_settings_asks_for_the_permission_instead_of_failing(client, auth, live):
    live.read_themes = False
    html = card(client, auth)
    assert "Could not check" in html and "approve the updated permissions" in html


def test_a_shop_not_connected_or_shopify_down_is_a_message_not_a_500(client, auth, shop, fake_shopify, live):
    live.add_theme("Dawn", files={"config/settings_data.json": settings_data({"1": embed()})})
    fake_shopify.fail_next("503", times=5)
    assert "Shopify could not be reached" in card(client, auth)
    other = make_shop("beta.myshopify.com")  # never connected
    assert theme_embed.read(other, HANDLE).state == "unknown"


def test_a_broken_settings_file_is_a_message(client, auth, live):
    live.add_theme("Dawn", files={"config/settings_data.json": "{broken"})
    assert "could not be read" in card(client, auth)


def test_the_settings_page_loads_the_state_after_the_page(client, auth, live):
    live.add_theme("Dawn", files={"config/settings_data.json": settings_data({"1786": embed()})})
    page = client.get("/settings/signup/popup", headers=auth).get_data(as_text=True)
    assert 'hx-get="/settings/signup/popup/embed"' in page and 'hx-trigger="load"' in page
    assert "App embed on" not in page  # the card itself never waits for Shopify
    assert "theme.liquid" not in page and "/apps/kinnekt/popup.js" not in page  # no more pasted script


def test_the_demo_store_shows_its_embed_on(client, auth, db, shop):
    shop.is_demo = True
    db.commit()
    html = card(client, auth)
    assert "App embed on" in html and "Dawn" in html
