"""The theme app extension (extensions/kinnekt-theme): the layout Shopify's CLI deploys, a valid app embed schema
(JSON, setting ids and types Shopify accepts, target "body", translations present), its Liquid rendered with
python-liquid, and one copy of the popup's script and styles (the app proxy serves the extension's own files).
The popup in a browser through the embed: tests/test_browser_popup.py."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.theme_extension import EXTENSION, asset_url, block_source, defaults, render_embed, schema

SETTING_TYPES = {"checkbox", "number", "radio", "range", "select", "text", "textarea", "color", "color_background",
                 "font_picker", "html", "image_picker", "link_list", "liquid", "page", "product", "collection",
                 "richtext", "url", "video_url", "blog", "article", "color_scheme", "metaobject"}
"""Input setting types a theme app extension block may use (shopify.dev, "Input settings")."""
SIDEBAR_TYPES = {"header", "paragraph"}
HEX = re.compile(r"^#[0-9a-f]{6}$")


def test_the_extension_has_the_layout_shopify_cli_deploys():
    config = tomllib.loads((EXTENSION / "shopify.extension.toml").read_text())
    assert config["type"] == "theme" and config["name"] == EXTENSION.name
    assert sorted(p.name for p in EXTENSION.iterdir()) == ["assets", "blocks", "locales", "shopify.extension.toml"]
    assert sorted(p.name for p in (EXTENSION / "assets").iterdir()) == ["kinnekt-popup.css", "kinnekt-popup.js"]
    assert [p.name for p in (EXTENSION / "blocks").iterdir()] == ["popup.liquid"]


def test_the_app_embed_schema_is_one_shopify_accepts():
    block = schema()
    assert block["target"] == "body"  # an app embed, not a section block
    assert set(block) <= {"name", "target", "settings", "javascript", "stylesheet", "class", "tag",
                          "available_if", "enabled_on", "disabled_on"}
    ids = [s["id"] for s in block["settings"] if "id" in s]
    assert len(ids) == len(set(ids)), "setting ids are unique"
    for setting in block["settings"]:
        if setting["type"] in SIDEBAR_TYPES:
            assert setting.get("content") and "id" not in setting
            continue
        assert setting["type"] in SETTING_TYPES, setting
        assert re.fullmatch(r"[a-z][a-z0-9_]*", setting["id"]), setting
        assert setting.get("label"), setting
        if setting["type"] == "range":
            low, high, step = setting["min"], setting["max"], setting["step"]
            assert low < high and step > 0 and (high - low) / step <= 101  # Shopify allows 101 steps at most
            assert low <= setting["default"] <= high and (setting["default"] - low) % step == 0
        if setting["type"] == "checkbox":
            assert isinstance(setting["default"], bool)
        if setting["type"] == "color":
            assert HEX.match(setting["default"])
    assert set(ids) >= {"delay_seconds", "exit_intent", "show_on_home", "show_on_product", "show_on_collection",
                        "show_on_cart", "show_on_other", "background_color", "text_color", "button_color",
                        "button_text_color"}


def test_every_translated_label_of_the_schema_has_its_english_text():
    strings = json.loads((EXTENSION / "locales" / "en.default.schema.json").read_text())
    keys = re.findall(r'"t:([a-z0-9_.]+)"', json.dumps(schema()))
    assert keys
    for key in keys:
        value = strings
        for part in key.split("."):
            value = value[part]
        assert isinstance(value, str) and value.strip(), key
    assert len(schema()["name"]) <= 25 or schema()["name"].startswith("t:")
    assert len(strings["popup"]["name"]) <= 25  # the theme editor's limit for a block name


def test_the_embed_renders_the_script_with_the_settings_and_the_proxy_under_the_market_root():
    html = render_embed(settings={"delay_seconds": 12, "exit_intent": True, "button_color": "#0b6e4f"})
    assert f'<script src="{asset_url("kinnekt-popup.js")}" defer' in html
    assert f'href="{asset_url("kinnekt-popup.css")}"' in html
    assert 'data-proxy="/apps/kinnekt"' in html and 'data-delay="12"' in html
    assert 'data-exit-intent="true"' in html and "--kn-button: #0b6e4f;" in html
    assert 'data-proxy="/de/apps/kinnekt"' in render_embed(root_url="/de")
    # nothing of the words: they come from Kinnekt's settings through the proxy
    assert "Sign up" not in html and "Consent" not in html


@pytest.mark.parametrize("template, setting", [
    ("index", "show_on_home"), ("product", "show_on_product"), ("collection", "show_on_collection"),
    ("list-collections", "show_on_collection"), ("cart", "show_on_cart"), ("search", "show_on_other"),
    ("page", "show_on_other"), ("blog", "show_on_other"),
])
def test_each_page_follows_its_setting(template, setting):
    assert "kinnekt-popup.js" in render_embed(template=template, settings={setting: True})
    assert render_embed(template=template, settings={setting: False}).strip() == ""


def test_the_defaults_show_it_everywhere_but_the_cart_after_five_seconds():
    values = defaults()
    assert (values["delay_seconds"], values["exit_intent"], values["show_on_cart"]) == (5, False, False)
    assert all(values[key] for key in ("show_on_home", "show_on_product", "show_on_collection", "show_on_other"))


def test_the_block_has_no_words_of_the_popup_and_no_second_copy_of_the_script(app):
    """The headline, body, button and consent text are Kinnekt's settings; the script and styles exist once."""
    settings = json.dumps(schema()) + json.dumps(json.loads((EXTENSION / "locales" / "en.default.schema.json")
                                                             .read_text()))
    assert not re.search(r"headline|body_text|button_label|consent|disclosure", settings, re.I)
    assert "block.settings.headline" not in block_source()
    static = app.static_folder
    assert not list(Path(static).rglob("*popup*.js")) and not list(Path(static).rglob("*popup*.css"))


def test_the_app_proxy_serves_the_extensions_own_files_for_pasted_script_tags(client):
    script = client.get("/proxy/popup.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert script.data == (EXTENSION / "assets" / "kinnekt-popup.js").read_bytes()
    style = client.get("/proxy/popup.css")
    assert style.status_code == 200 and style.data == (EXTENSION / "assets" / "kinnekt-popup.css").read_bytes()
