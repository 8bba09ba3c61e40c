"""The app's chrome in Chromium: the admin's own navigation, title bar and toasts when embedded, the page's own
sidebar (a drawer on narrow screens) in the demo."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from kinnekt.web.templating import NAV

pytestmark = pytest.mark.browser


def _app_bridge(page, key):
    return page.evaluate(f"window.__appBridge.{key}")


def test_embedded_pages_use_the_admins_navigation_title_bar_and_toasts(embedded, open_page, shop):
    page = open_page("/segments/")
    expect(page.locator("main h1").first).to_have_text("Segments")
    # One navigation: the admin's, not a second sidebar inside the iframe.
    expect(page.locator(".frame__nav")).to_have_count(0)
    expect(page.locator("[data-nav-toggle]")).to_have_count(0)
    nav = _app_bridge(page, "nav")
    assert nav[0] == {"label": "Kinnekt", "href": "/", "rel": "home"}
    assert [item["label"] for item in nav[1:]] == [label for endpoint, label in NAV if endpoint != "home.index"]
    assert all(item["href"].startswith("/") for item in nav)

    # The page title and its actions are in the admin's title bar; the primary action works from there.
    title_bar = page.locator("ui-title-bar")
    expect(title_bar).to_have_attribute("title", "Segments")
    expect(title_bar.locator("button")).to_have_text(["Static lists", "Create segment"])
    expect(title_bar.locator("button[variant=primary]")).to_have_text("Create segment")
    expect(page.locator(".page-header__actions").first).to_be_hidden()
    title_bar.locator("button[variant=primary]").dispatch_event("click")  # App Bridge clicks it for the admin
    expect(page.locator("ui-title-bar")).to_have_attribute("title", "New segment")

    # Toasts go to the admin.
    page = open_page("/settings/")
    page.locator("#settings-quiet-hours").get_by_role("button", name="Save quiet hours").click()
    page.wait_for_function("() => window.__appBridge.toasts.length > 0")
    assert _app_bridge(page, "toasts") == [{"message": "Quiet hours saved", "isError": False}]
    expect(page.locator("#toasts")).to_be_empty()


def test_demo_pages_keep_their_own_sidebar_and_toasts(open_page, shop):
    page = open_page("/settings/")
    expect(page.locator("#app-nav").get_by_role("link", name="Settings", exact=True)).to_be_visible()
    expect(page.locator("ui-title-bar")).to_have_count(0)
    expect(page.locator("s-app-nav")).to_have_count(0)
    page.locator("#settings-quiet-hours").get_by_role("button", name="Save quiet hours").click()
    expect(page.locator("#toasts")).to_contain_text("Quiet hours saved")
    assert _app_bridge(page, "toasts") == []


def test_narrow_screen_opens_the_navigation_from_a_menu_button(open_page, page, shop):
    page.set_viewport_size({"width": 390, "height": 844})
    page = open_page("/segments/")
    expect(page.locator("main h1").first).to_have_text("Segments")
    settings = page.locator("#app-nav").get_by_role("link", name="Settings", exact=True)
    expect(settings).to_be_hidden()  # out of the way, not cut off
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    for _endpoint, label in NAV:  # every entry is on screen
        link = page.locator("#app-nav").get_by_role("link", name=label, exact=True)
        expect(link).to_be_in_viewport(ratio=1)
    page.keyboard.press("Escape")
    expect(settings).to_be_hidden()
    menu.click()
    settings.click()
    expect(page.locator("main h1").first).to_have_text(re.compile("^Settings"))
    expect(settings).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
